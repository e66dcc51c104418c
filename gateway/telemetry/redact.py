"""Keeping credentials out of logs: a structlog processor that scrubs known secret values, credential-named
fields, bearer tokens, key-like query parameters and the gateway's own client keys from every log line, whatever
wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from structlog.typing import EventDict, WrappedLogger

from gateway.config.providers import ProviderTable

REDACTED = "[REDACTED]"
# Field and header names whose value is a credential, compared lower-cased with `_` read as `-`.
SECRET_NAMES = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "apikey",
        "cookie",
        "set-cookie",
        "key",
        "token",
        "access-token",
        "secret",
        "password",
    }
)
# Environment variables whose values are treated as secrets (provider keys, client keys, OIDC secrets ...).
_SECRET_ENV = re.compile(r"(KEY|KEYS|TOKEN|TOKENS|SECRET|PASSWORD|CREDENTIALS?)$")
# Shorter values would redact ordinary words; real keys are far longer.
MIN_SECRET_LENGTH = 8
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:key|api[_-]?key|access[_-]?token|token|secret|password|sig|signature)=)[^&#\s\"']+"
)
# The gateway's client keys (access/keys.py, `keys new`): `gwk_`, a 12-hex-digit id, `_`, then the secret (43
# URL-safe base64 characters). Matched wherever they appear, the secret cut or not, so that a key sent in a path, a
# model or a request id is scrubbed without being configured; the id is not secret and is kept, to tell keys apart.
# Defined here, not imported: telemetry does not import access (docs/architecture.md, the layering contract).
_CLIENT_KEY_PREFIX = "gwk_"
_CLIENT_KEY = re.compile(r"(gwk_[0-9A-Fa-f]{12}_)[A-Za-z0-9_-]+")
_MAX_DEPTH = 6
_MEMO_TEXT = 256
_MEMO_ENTRIES = 4096


def secret_values(env: Mapping[str, str], table: ProviderTable | None = None) -> set[str]:
    """Every value that must never be printed: the table's provider keys and any credential-named variable."""
    names = {name for name in env if _SECRET_ENV.search(name.upper())}
    if table is not None:
        names |= {p.key_env for p in table.providers.values() if p.key_env}
    values: set[str] = set()
    for name in names:
        raw = env.get(name) or ""
        # Lists of client keys come comma-separated; each part is a secret of its own.
        for part in (raw, *raw.split(",")):
            part = part.strip()
            if len(part) >= MIN_SECRET_LENGTH:
                values.add(part)
    return values


class Redactor:
    """A structlog processor; `update` swaps the known secrets at once (for a reload)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._known: re.Pattern[str] | None = None
        # Field names seen so far -> whether they name a credential; bounded, field names come from code.
        self._names: dict[str, bool] = {}
        # Text -> its scrubbed form. The same few values (methods, models, paths) come by on every access line:
        # remember their outcome, for short texts and up to a bound; emptied whenever the known secrets change.
        self._memo: dict[str, str] = {}
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._known = re.compile("|".join(re.escape(v) for v in values)) if values else None
        self._memo.clear()

    def scrub(self, text: str) -> str:
        done = self._memo.get(text)
        if done is not None:
            return done
        done = text if len(text) < MIN_SECRET_LENGTH else self._scrub(text)  # too short to hold a key
        if len(text) <= _MEMO_TEXT and len(self._memo) < _MEMO_ENTRIES:
            self._memo[text] = done
        return done

    def _scrub(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        if "earer" in text or "asic" in text:
            text = _BEARER.sub(rf"\1 {REDACTED}", text)
        if "=" in text:
            text = _QUERY_SECRET.sub(rf"\1{REDACTED}", text)
        # Last: a key already hidden as a bearer token or a query value is not cut in two.
        if _CLIENT_KEY_PREFIX in text:
            text = _CLIENT_KEY.sub(rf"\1{REDACTED}", text)
        return text

    def _is_secret_name(self, name: str) -> bool:
        known = self._names.get(name)
        if known is None:
            known = name.lower().replace("_", "-") in SECRET_NAMES
            if len(self._names) < 4096:
                self._names[name] = known
        return known

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        for name, value in event_dict.items():
            kind = type(value)
            if value is None or kind is bool or kind is int or kind is float:
                continue
            if self._is_secret_name(name):
                event_dict[name] = REDACTED
            elif kind is str:
                event_dict[name] = self.scrub(value)
            else:
                event_dict[name] = self._clean(None, value, 0)
        return event_dict

    def clean(self, value: Any) -> Any:
        """A copy of `value` (JSON-like) with credential-named fields and secret-looking text scrubbed."""
        return self._clean(None, value, 0)

    def _clean(self, name: Any, value: Any, depth: int) -> Any:
        if isinstance(name, str) and self._is_secret_name(name):
            return REDACTED
        if isinstance(value, str):
            return self.scrub(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth >= _MAX_DEPTH:
            return "..."
        if isinstance(value, Mapping):
            return {k: self._clean(k, v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(None, v, depth + 1) for v in value]
        # Anything else (an exception, a URL object) is printed as text: scrub that text.
        return self.scrub(str(value))
