"""Logging set-up: structlog, JSON lines in production, readable console lines in development, every line (the
standard library's too, e.g. aiohttp's) passed through the same redaction before it is written.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog

from gateway.config.settings import Environment
from gateway.telemetry.redact import Redactor


def _dumps(event: Any, default: Any) -> str:
    return orjson.dumps(event, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


_LEVEL_NAMES = {level: logging.getLevelName(level).lower() for level in (logging.DEBUG, logging.INFO, logging.WARNING)}


class JsonLines:
    """The line every request writes (the access line), in production: the same fields, redaction and JSON as
    structlog's chain below, without its per-call processor machinery, which cost as much as the line itself."""

    def __init__(self, stream: TextIO, redactor: Redactor, level: int, processors: list[Any]) -> None:
        self.processors = processors  # the chain it stands in for: in effect only while that one is
        self.renderer = processors[-1]
        self._stream = stream
        self.scrub = redactor.scrub  # what the redaction processor does to each text value
        self._level = level
        self._flush_pending = False
        self._second = -1
        self._prefix = ""

    def write_scrubbed(self, level: int, event: str, fields: dict[str, Any]) -> None:
        """A line whose caller has passed each value that could hold a secret through `scrub` (the bound context
        is scrubbed here)."""
        if level < self._level:
            return
        fields["event"] = event
        for name, value in structlog.contextvars.get_contextvars().items():
            fields[name] = self.scrub(value) if type(value) is str else value
        fields["level"] = _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()
        fields["timestamp"] = self._timestamp()
        self._stream.write(orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE).decode())
        if self._flush_pending:
            return
        # One flush per turn of the event loop, not per line: under load the lines of requests that end together
        # leave in one write. Any other line (structlog's PrintLogger flushes each) flushes these first, in order.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._stream.flush()
            return
        self._flush_pending = True
        loop.call_soon(self._flush)

    def _timestamp(self) -> str:
        """structlog's ISO UTC stamp, with the date and time up to the second made once per second."""
        now = time.time_ns() // 1000
        second, micros = divmod(now, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return "%s.%06dZ" % (self._prefix, micros)  # noqa: UP031 - cheaper than an f-string with a format spec

    def _flush(self) -> None:
        self._flush_pending = False
        self._stream.flush()


# Set with structlog's own (process-wide) configuration, by configure_logging only.
_json_lines: JsonLines | None = None


def json_lines() -> JsonLines | None:
    """Production's fast writer, or None when lines go through structlog: in development (the console renderer),
    or when structlog has been configured since (a test capturing lines)."""
    lines = _json_lines
    if lines is None:
        return None
    processors = structlog.get_config()["processors"]
    # structlog.testing.capture_logs swaps the chain's contents in place: compare the renderer at its end too.
    if processors is not lines.processors or not processors or processors[-1] is not lines.renderer:
        return None
    return lines


def active_redactor() -> Redactor:
    """The redactor every log line passes through (it learns new secrets on reload); a fresh one, knowing only the
    patterns, before logging is configured."""
    for processor in structlog.get_config()["processors"]:
        if isinstance(processor, Redactor):
            return processor
    return Redactor()


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
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        *shared,
        redactor,
        renderer,
    ]
    global _json_lines
    _json_lines = None if environment == "development" else JsonLines(out, redactor, level, processors)
    structlog.configure(
        processors=processors,
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
