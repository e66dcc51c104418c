"""Reading the client's request body: bounded in size, timed, and refused cleanly when its framing breaks."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.errors import IncompleteRequest, RequestTimeout, RequestTooLarge


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body within `timeout`; 413 as soon as it is known to exceed `limit` bytes: before reading when
    it announces more, else once the bytes read pass the limit (a chunked body is never read past it)."""
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLarge(f"request body of {length} bytes is over the limit of {limit} bytes")
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
                parts.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g}s") from None
    except (HttpProcessingError, ConnectionError) as exc:
        # Broken framing (bad chunk sizes, a body shorter than announced) or a client that went away.
        raise IncompleteRequest(f"the request body could not be read ({type(exc).__name__})") from None
    return b"".join(parts)
