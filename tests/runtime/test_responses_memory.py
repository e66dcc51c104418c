"""The memory of which provider made each response: bounded, least recently used forgotten first."""

from __future__ import annotations

from gateway.runtime.responses import Owner, ResponseOwners


def test_the_oldest_is_forgotten_past_the_limit_and_a_lookup_keeps_one() -> None:
    owners = ResponseOwners(limit=2)
    owners.remember("r1", "a", None)
    owners.remember("r2", "b", "alice")
    assert owners.owner("r1") == Owner("a", None)  # r1 used: r2 is now the oldest
    owners.remember("r3", "a", None)
    assert len(owners) == 2
    assert owners.owner("r2") is None and owners.owner("r1") is not None and owners.owner("r3") is not None
    owners.forget("r1")
    owners.forget("never")
    assert owners.owner("r1") is None and len(owners) == 1
