"""Which fingerprint classes of the fleet a function's snapshots serve.

One rule for the scheduler (which asks for the missing snapshots at deploy)
and the gateway (which shows the coverage in `thaw snapshot list`): a class
is covered when a ready snapshot is compatible with its nodes, since the
catalog then hands that snapshot out and no node of the class makes another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from thaw_core.fingerprint import compatible, fingerprint_id
from thaw_core.schema import Fingerprint


def node_classes(fingerprints: Iterable[Fingerprint]) -> dict[str, Fingerprint]:
    """One fingerprint per class among ``fingerprints``, by class id."""
    return {fingerprint_id(fp): fp for fp in fingerprints}


def uncovered(snapshots: Iterable[Fingerprint], classes: Mapping[str, Fingerprint]) -> list[str]:
    """The classes no snapshot (by the fingerprint it was taken on) restores on."""
    taken = list(snapshots)
    return sorted(cls for cls, fp in classes.items() if not any(compatible(s, fp) for s in taken))
