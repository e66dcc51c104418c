"""Reading the client's request body: bounded in size, timed, refused cleanly when its framing breaks, and counted
against the memory all bodies in flight may take together (a budget shared by every request).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.errors import Handler, IncompleteRequest, RequestTimeout, RequestTooLarge, ServerBusy

# What parsing a JSON body builds beyond its bytes, per object or array it holds (a dict or list object and its
# slot in its parent, measured on CPython 3.11 with orjson: `[{},{},...]` of 10 MB builds about 280 MB).
PARSED_PER_CONTAINER = 80
RETRY_AFTER = "1"


class BodyBudget:
    """The memory request bodies in flight may take together: the bytes read, and an estimate of what parsing them
    builds. A request that would take it past the limit is refused (503 with Retry-After) rather than let a few
    large or pathological bodies take the process past its memory limit, and every stream in it."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit
        self.used = 0

    def hold(self) -> Held:
        return Held(self)


class Held:
    """One request's share of the budget, given back whole by `release` when the request ends."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        budget = self._budget
        if budget.limit and budget.used + size > budget.limit:
            raise ServerBusy(
                "the gateway is at its limit of request bodies in flight; retry shortly",
                headers={"Retry-After": RETRY_AFTER},
            )
        budget.used += size
        self.size += size

    def take_parse(self, raw: bytes) -> None:
        """What parsing `raw` builds (a copy of its text, an object per JSON object or array) and the re-encoded
        body sent upstream when the model name changes: measured, a 10 MB text body takes about 40 MB in all."""
        containers = raw.count(b"{") + raw.count(b"[")
        self.take(2 * len(raw) + PARSED_PER_CONTAINER * containers)

    def release(self) -> None:
        self._budget.used -= self.size
        self.size = 0


BODY_BUDGET = web.AppKey("body_budget", BodyBudget)


def holding_body(serve: Callable[[web.Request, Held], Awaitable[web.StreamResponse]]) -> Handler:
    """A handler that reads a body: its share of the body budget is given back when the request ends, whatever
    the outcome."""

    async def handler(request: web.Request) -> web.StreamResponse:
        held = request.app[BODY_BUDGET].hold()
        try:
            return await serve(request, held)
        finally:
            held.release()

    return handler


async def read_body(request: web.Request, limit: int, timeout: float, held: Held) -> bytes:
    """The whole body within `timeout`; 413 as soon as it is known to exceed `limit` bytes: before reading when
    it announces more, else once the bytes read pass the limit (a chunked body is never read past it). Its bytes
    are taken from the body budget (`held`) as they arrive, announced ones before reading."""
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLarge(f"request body of {length} bytes is over the limit of {limit} bytes")
    announced = length is not None
    if length:
        held.take(length)
    parts: list[bytes] = []
    size = 0
    try:
        # The whole body came in with the head (the common case): nothing to wait for, so no timer.
        waiting = contextlib.nullcontext() if request.content.is_eof() else asyncio.timeout(timeout)
        async with waiting:
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(f"request body is over the limit of {limit} bytes")
                if not announced:  # chunked: taken as it comes
                    held.take(len(chunk))
                parts.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g}s") from None
    except (HttpProcessingError, ConnectionError) as exc:
        # Broken framing (bad chunk sizes, a body shorter than announced) or a client that went away.
        raise IncompleteRequest(f"the request body could not be read ({type(exc).__name__})") from None
    return b"".join(parts)
