"""Which provider made each response of the Responses API, and for which client: a response lives at the provider
that made it, so its follow-ups must go there. Bounded: past the limit the oldest is forgotten first, and a
forgotten id is one the client names the provider of (`?provider=`)."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

# About 200 bytes an entry: 100,000 responses are some 20 MB at most.
REMEMBERED = 100_000


class Owner(NamedTuple):
    provider: str  # the provider id
    client: str | None  # the authenticated client's name; None with client auth off


class ResponseOwners:
    """Response id -> its Owner, least recently made or used forgotten first."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self.limit = limit
        self._owners: OrderedDict[str, Owner] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def remember(self, response_id: str, provider: str, client: str | None) -> None:
        owners = self._owners
        owners[response_id] = Owner(provider, client)
        owners.move_to_end(response_id)
        while len(owners) > self.limit:
            owners.popitem(last=False)

    def owner(self, response_id: str) -> Owner | None:
        found = self._owners.get(response_id)
        if found is not None:
            self._owners.move_to_end(response_id)
        return found

    def forget(self, response_id: str) -> None:
        self._owners.pop(response_id, None)
