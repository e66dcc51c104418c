"""Quiet refusals of malformed HTTP: aiohttp logs every request its parser rejects (bad framing, huge or broken
headers) with a traceback at ERROR, so a hostile client could fill the logs. The client already got its 400;
this turns each such record into one warning line without the traceback. Real server errors are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

AIOHTTP_SERVER_LOGGER = "aiohttp.server"


class MalformedRequestFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            first_line = (exc.message or "").strip().splitlines()[:1]
            record.msg = "refused a malformed request from %s: %s"
            record.args = (remote, f"{type(exc).__name__} ({first_line[0] if first_line else exc.code})")
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


async def quiet_refusals(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the filter is on the aiohttp server logger only while the app runs."""
    logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    installed = MalformedRequestFilter()
    logger.addFilter(installed)
    try:
        yield
    finally:
        logger.removeFilter(installed)
