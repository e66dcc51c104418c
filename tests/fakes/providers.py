"""The fake providers (aiohttp servers on 127.0.0.1 standing in for the real ones) and what they answer; table
entries shaped like the spec's; network helpers."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config.providers import ProviderTable, parse_table

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request as it reached a fake provider."""

    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


def chat_answer(model: str = "m", content: str = "hi", usage: bool = True) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }
    if usage:
        answer["usage"] = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return answer


async def default_answer(request: web.Request) -> web.StreamResponse:
    if request.path.endswith("/models"):
        return web.json_response({"object": "list", "data": [{"id": "m1", "object": "model", "created": 7}]})
    return web.json_response(chat_answer())


def answering(payload: Any, status: int = 200) -> Handler:
    """A handler answering `payload` as JSON with `status`, whatever was asked."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status)

    return handler


@dataclass
class FakeProvider:
    """A provider on 127.0.0.1: each request goes to the handler for its path in `routes`, else to `default`. With
    `record` (the default), each request is first read whole and kept in `requests`; without, the handler alone
    decides whether and when the body is read, and nothing is kept (for long runs)."""

    routes: dict[str, Handler] = field(default_factory=dict)
    default: Handler = default_answer
    record: bool = True
    requests: list[Seen] = field(default_factory=list)
    server: TestServer = field(init=False, repr=False)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if self.record:
            body = await request.read()
            self.requests.append(
                Seen(request.method, request.path, request.raw_path, dict(request.query), dict(request.headers), body)
            )
        return await self.routes.get(request.path, self.default)(request)

    async def start(self, aiohttp_server: Any) -> Self:
        """Serve on a test server from pytest-aiohttp's `aiohttp_server` fixture (closed with the test)."""
        self.server = await aiohttp_server(self.app())
        return self

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port

    @property
    def last(self) -> Seen:
        return self.requests[-1]


async def start_provider(
    aiohttp_server: Any,
    default: Handler = default_answer,
    routes: Mapping[str, Handler] | None = None,
    *,
    record: bool = True,
) -> FakeProvider:
    """A FakeProvider answering with `default` (every path not in `routes`), serving until the test ends."""
    return await FakeProvider(dict(routes or {}), default, record).start(aiohttp_server)


def entry(pid: str, url: str, auth_type: str = "none", **extra: Any) -> dict[str, Any]:
    """One provider table entry shaped like the spec's x-provider-configs."""
    return {
        "id": pid,
        "url": url,
        "auth_type": auth_type,
        "supports_vision": extra.pop("supports_vision", True),
        "endpoints": {
            "models": {"name": "list_models", "method": "GET", "endpoint": extra.pop("models_endpoint", "/models")},
            "chat": {
                "name": "chat_completions",
                "method": "POST",
                "endpoint": extra.pop("chat_endpoint", "/chat/completions"),
            },
        },
        **extra,
    }


def table_of(*entries: dict[str, Any], env: Mapping[str, str] | None = None) -> ProviderTable:
    document = {"providers": {e["id"]: e for e in entries}}
    return parse_table(yaml.safe_dump(document), dict(env or {}), source="test.yaml")


async def raw_http(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side URL normalising) and return (status, body)."""
    import asyncio

    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def free_port() -> int:
    """A loopback port free at the time of asking (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, process: subprocess.Popen[bytes], limit: float = 20.0) -> None:
    """Block until `process` accepts on `port`; fail if it exits first or nothing listens within `limit`."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port} within {limit}s")


class RawServer:
    """An asyncio server on 127.0.0.1 whose connection handlers are all ended when it stops."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            await self.serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stopped with the test: end quietly (a cancelled handler task is logged as an error on 3.11)
        finally:
            writer.close()
