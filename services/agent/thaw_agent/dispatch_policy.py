"""How the agent paces, bounds and retries inputs: every timeout and limit of
input dispatch, and the rules for running a call again."""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec
from thaw_core.contract import INVOKE_ACK_WAIT_S, INVOKE_KEEPALIVE_S
from thaw_core.schema import CallStatus, Invoke, RetryPolicy

# A refused input is published nowhere: keep what reject() previews of it small.
MAX_INPUT_BYTES = 64 * 1024 * 1024
# Cancelled calls remembered, so that an input of one is skipped, not run.
CANCELLED_MEMORY = 10_000
CANCELLED_TTL_S = 3600.0


@dataclass(frozen=True)
class DispatchTimings:
    # An input not kept alive this long is handed to another agent (the
    # INVOKE consumer's ack wait).
    ack_wait_s: float = INVOKE_ACK_WAIT_S
    # How often a running input is kept alive: well inside ack_wait_s.
    in_progress_every_s: float = INVOKE_KEEPALIVE_S
    # One fetch is a long poll of up to this long.
    fetch_timeout_s: float = 2.0
    # One pull asks for every free slot (up to this), so a busy function costs
    # one round trip to the server per batch of inputs rather than per input.
    max_fetch: int = 256
    # An input we failed to dispatch or store comes back after this.
    retry_on_error_s: float = 1.0
    # How long a container that failed to initialise waits for inputs to
    # fail (a long poll: it returns as soon as there is one).
    init_failed_fetch_s: float = 5.0


def retries(status: CallStatus) -> bool:
    """Whether a call that ended with ``status`` may run again: failures and
    timeouts are the call's own outcome; "terminated" (its container stopped
    under it) is not, and runs again without counting as an attempt."""
    return status in ("failure", "timeout")


def next_attempt(invoke: Invoke, status: CallStatus, policy: RetryPolicy) -> Invoke | None:
    """The next attempt of ``invoke`` after it ended with ``status``, delayed
    by the policy's backoff; None when the call is done."""
    if not retries(status) or invoke.attempt > policy.max_retries:
        return None
    return msgspec.structs.replace(
        invoke,
        attempt=invoke.attempt + 1,
        not_before=time.time() + policy.delay_s(invoke.attempt),
    )


def retry_msg_id(invoke: Invoke) -> str:
    """The msg-id of one attempt: publishing the same retry twice stores it once."""
    return f"{invoke.call_id}:attempt:{invoke.attempt}"
