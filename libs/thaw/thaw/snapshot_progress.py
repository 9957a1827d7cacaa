"""The memory snapshots a deploy makes, as `thaw deploy` shows them.

After a deploy, the scheduler has a node of each fingerprint class take a
snapshot of every snapshot-enabled function (``deploy_snapshots``), so that
the first call restores. The deploy follows that through the gateway's
snapshot coverage and listing: "taking a memory snapshot of f…", then per
function "ready in N s", "failed: why", or (when a snapshot does not help)
"starts cold"; it stops waiting after ``timeout_s`` whatever is left, and the
app is deployed and serving meanwhile either way (a call before the snapshot
starts cold).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from thaw_core.schema import SnapshotCoverage, SnapshotInfo

if TYPE_CHECKING:  # the CLI reads DEFAULT_TIMEOUT_S without importing the client
    from thaw.client import Client

# Enough for most cold starts, their checkpoint and upload; a heavier one is
# left being made (and shown in `thaw snapshot list`) rather than waited for.
DEFAULT_TIMEOUT_S = 120.0
POLL_S = 0.5
# The scheduler asks for the snapshots within its catalog refresh (10 s) and
# a node claims one at once: none claimed after this, none is coming soon
# (no node has room for the function, or the snapshots service is not running).
UNCLAIMED_S = 30.0


@dataclass(frozen=True)
class Outcome:
    """How one function's snapshots ended up, as the deploy printed it."""

    function: str
    line: str
    ok: bool


def outcome(
    function: str,
    coverage: SnapshotCoverage | None,
    snapshots: list[SnapshotInfo],
    elapsed_s: float,
) -> Outcome | None:
    """The function's outcome once decided (None: still being made).
    ``snapshots`` are the deployed version's."""
    failed = [s for s in snapshots if s.state == "obsolete" and not s.size and s.error]
    if coverage is not None and coverage.present == 0:
        return Outcome(function, f"no live node to take a snapshot of {function} on", False)
    if coverage is not None and coverage.covered + coverage.unhelpful >= coverage.present:
        if coverage.covered == 0:
            return Outcome(
                function,
                f"{function} starts cold: its snapshot restores no faster than a cold start",
                True,
            )
        return Outcome(
            function,
            f"✓ memory snapshot of {function} ready in {elapsed_s:.1f}s"
            f" ({coverage.covered} of {coverage.present} fingerprint classes)",
            True,
        )
    if failed:
        return Outcome(
            function,
            f"✗ memory snapshot of {function} failed: {failed[0].error}"
            " (its calls start cold until one is made)",
            False,
        )
    if not snapshots and elapsed_s >= UNCLAIMED_S:
        return Outcome(
            function,
            f"… no node took up a memory snapshot of {function} in {UNCLAIMED_S:.0f}s;"
            " its calls start cold until one is made (see `thaw snapshot list`)",
            False,
        )
    return None


async def follow(
    client: Client,
    app: str,
    version: int,
    functions: list[str],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    live: bool | None = None,
) -> list[Outcome]:
    """Show the snapshots of ``functions`` (app ``app`` at ``version``) being
    made until each is ready or failed, or ``timeout_s`` passed."""
    from thaw._live_lines import LiveLines
    from thaw.snapshot_client import list_snapshots, snapshot_coverage

    started = time.monotonic()
    pending = sorted(functions)
    done: list[Outcome] = []
    with LiveLines(live=live) as lines:
        for f in pending:
            lines.print(f"taking a memory snapshot of {f}…", "cyan")
        while pending:
            elapsed = time.monotonic() - started
            coverage = {
                c.function: c
                for c in await snapshot_coverage(client, app)
                if c.version == version
            }
            made = [s for s in await list_snapshots(client, app) if s.version == version]
            for f in list(pending):
                got = outcome(f, coverage.get(f), [s for s in made if s.function == f], elapsed)
                if got is not None:
                    lines.spin(None)
                    lines.print(got.line, "green" if got.ok else "bold red")
                    done.append(got)
                    pending.remove(f)
            if not pending:
                break
            if elapsed >= timeout_s:
                lines.spin(None)
                for f in pending:
                    line = (
                        f"… memory snapshot of {f} not ready after {timeout_s:.0f}s; it is still"
                        " being made: see `thaw snapshot list`"
                    )
                    lines.print(line, "yellow")
                    done.append(Outcome(f, line, False))
                break
            lines.spin(f"taking memory snapshots of {', '.join(pending)} ({elapsed:.0f}s)…")
            await asyncio.sleep(POLL_S)
    return done
