"""The outbound namespace's firewall: the host's and the platform's
addresses are refused, but not the namespace's own loopback (a container's
web_server is reached over it)."""

from __future__ import annotations

from thaw_core.outbound_netns import SLIRP_HOST_ALIAS, reject_rules


def test_loopback_is_the_namespaces_own_and_stays_reachable() -> None:
    rules = reject_rules(["127.0.0.1", "127.0.1.1", "192.0.2.2"])
    rejected = [line.split()[3] for line in rules.splitlines() if line.startswith("-A OUTPUT")]
    assert rejected == [f"{SLIRP_HOST_ALIAS}/32", "192.0.2.2/32"]
