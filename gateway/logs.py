"""Logging set-up: structlog, JSON lines in production, readable console lines in development, every line (the
standard library's too, e.g. aiohttp's) passed through the same redaction before it is written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import orjson
import structlog

from .redact import Redactor
from .settings import Environment


def _dumps(event: Any, default: Any) -> str:
    return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(
    environment: Environment,
    level: int | None = None,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    cache: bool = True,
) -> Redactor:
    """Route structlog and the standard library to `stream` (stdout); returns the redactor so a reload can
    teach it new secrets. Development logs at DEBUG (request bodies); production at INFO."""
    out = sys.stdout if stream is None else stream
    if level is None:
        level = logging.DEBUG if environment == "development" else logging.INFO
    redactor = Redactor(secrets)
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if environment == "development"
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Exceptions become text before redaction, so a key inside an error message is scrubbed too.
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, redactor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.contextvars.merge_contextvars, structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(level, logging.INFO))
    return redactor
