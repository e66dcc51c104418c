"""The idle caps of the provider pool: connections beyond them are closed on release, not kept."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from gateway.pool import IdleCappedConnector


async def test_idle_connections_beyond_the_per_host_cap_are_closed(aiohttp_server) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", slow)
    server = await aiohttp_server(app)
    connector = IdleCappedConnector(max_idle=10, max_idle_per_host=2)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> str:
            async with session.get(server.make_url("/")) as response:
                return await response.text()

        calls = [asyncio.ensure_future(call()) for _ in range(5)]  # noqa: TID251 - awaited just below
        await asyncio.sleep(0.2)
        release.set()
        assert await asyncio.gather(*calls) == ["ok"] * 5
        assert connector.idle_connections == 2


async def test_the_total_idle_cap_spans_hosts(aiohttp_server) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    servers = []
    for _ in range(3):
        app = web.Application()
        app.router.add_get("/", ok)
        servers.append(await aiohttp_server(app))
    connector = IdleCappedConnector(max_idle=2, max_idle_per_host=5)
    async with aiohttp.ClientSession(connector=connector) as session:
        for server in servers:
            async with session.get(server.make_url("/")) as response:
                await response.read()
        assert connector.idle_connections == 2
