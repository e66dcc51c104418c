"""What a dialect provides. One instance per dialect, registered by name in `gateway.dialects.DIALECTS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# (status, message, the gateway's error type, its code) -> the body a client of this dialect expects.
ErrorBody = Callable[[int, str, str, str | None], bytes]


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    error_body: ErrorBody
    error_content_type: str = "application/json"
