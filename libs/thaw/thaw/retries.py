"""``thaw.Retries``: a function's retry policy, as Modal spells it."""

from __future__ import annotations

from thaw_core.schema import RetryPolicy

from thaw.exception import InvalidError


class Retries:
    def __init__(
        self,
        *,
        max_retries: int,
        backoff_coefficient: float = 2.0,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> None:
        # Modal's bounds: a policy outside them is almost certainly a typo
        # (seconds given as milliseconds, a retry storm).
        if not isinstance(max_retries, int) or not 0 <= max_retries <= 10:
            raise InvalidError(f"max_retries must be an integer from 0 to 10, got {max_retries!r}")
        if not 1.0 <= backoff_coefficient <= 10.0:
            raise InvalidError(
                f"backoff_coefficient must be from 1.0 to 10.0, got {backoff_coefficient!r}"
            )
        if not 0.0 <= initial_delay <= 60.0:
            raise InvalidError(f"initial_delay must be from 0 to 60 seconds, got {initial_delay!r}")
        if not 1.0 <= max_delay <= 60.0:
            raise InvalidError(f"max_delay must be from 1 to 60 seconds, got {max_delay!r}")
        self.policy = RetryPolicy(
            max_retries=max_retries,
            backoff_coefficient=float(backoff_coefficient),
            initial_delay_s=float(initial_delay),
            max_delay_s=float(max_delay),
        )

    def __repr__(self) -> str:
        p = self.policy
        return (
            f"Retries(max_retries={p.max_retries}, backoff_coefficient={p.backoff_coefficient}, "
            f"initial_delay={p.initial_delay_s}, max_delay={p.max_delay_s})"
        )


def retry_policy(retries: int | Retries) -> RetryPolicy:
    """``retries=N`` is ``RetryPolicy(max_retries=N)``; a ``Retries`` is taken as is."""
    if isinstance(retries, Retries):
        return retries.policy
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise InvalidError(f"retries must be an int or thaw.Retries, got {retries!r}")
    return Retries(max_retries=retries).policy
