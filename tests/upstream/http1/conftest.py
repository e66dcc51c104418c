"""Fixtures of the HTTP/1.1 client's tests: raw providers on 127.0.0.1, stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.fakes.net import RawServer


@pytest.fixture
async def servers() -> AsyncIterator[Callable[[RawServer], Awaitable[Any]]]:
    started: list[RawServer] = []

    async def start(server: RawServer) -> Any:
        await server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        await server.stop()
