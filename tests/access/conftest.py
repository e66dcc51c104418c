"""Fixtures of the access-control tests: the provider behind the gateway, and a clock that moves on demand."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.access import FakeClock
from tests.fakes.providers import ChatProvider, access_provider


@pytest.fixture
async def upstream(aiohttp_server: Any) -> ChatProvider:
    return await access_provider().start(aiohttp_server)


@pytest.fixture
def upstream_url(upstream: ChatProvider) -> str:
    return upstream.url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
