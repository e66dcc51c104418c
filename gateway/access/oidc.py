"""OIDC bearer tokens: the issuer's discovery document and JWKS (cached, refreshed on an unknown `kid`), and the
verification of a token's signature, issuer, audience and lifetime with PyJWT.

Nothing is fetched at import or construction: an issuer that is down at start-up only makes tokens fail until it
answers, and it is asked again at most every `retry_interval` seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import orjson
import structlog
from yarl import URL

log = structlog.get_logger("gateway.oidc")

# Public-key algorithms only: `none` and the HMAC family (whose "key" would be public JWKS material) never verify.
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
MAX_DOCUMENT = 1024 * 1024
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class TokenRejected(Exception):
    """The token is not valid; the message says why in words safe to show the client (never the token)."""


class IssuerUnavailable(TokenRejected):
    """The issuer's documents could not be fetched, so no token can be checked now."""


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts, the first a JSON object: an API key never has this shape."""
    return token.startswith("eyJ") and token.count(".") == 2


@dataclass(frozen=True, slots=True)
class _Key:
    jwk: jwt.PyJWK
    declared_alg: str | None  # the JWK's own `alg`, which a token must then use


@dataclass(frozen=True, slots=True)
class _Keys:
    by_kid: dict[str | None, _Key]
    fetched_at: float

    def pick(self, kid: str | None) -> _Key | None:
        if kid is None and len(self.by_kid) == 1:
            return next(iter(self.by_kid.values()))
        return self.by_kid.get(kid)


class OidcVerifier:
    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        leeway: float = 30.0,
        max_age: float = 3600.0,
        refresh_interval: float = 30.0,
        retry_interval: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        self.max_age = max_age  # JWKS older than this is fetched again
        self.refresh_interval = refresh_interval  # at most one refetch per interval for unknown `kid`s
        self.retry_interval = retry_interval
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._jwks_uri: URL | None = None
        self._keys: _Keys | None = None
        self._last_attempt = -float("inf")  # monotonic time of the last fetch, successful or not
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def prefetch(self) -> None:
        """Load the keys ahead of the first token; a failure is logged and tried again when a token comes."""
        if self._keys is None:
            await self._refresh(None)

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature, `iss`, `aud`, `exp` and `nbf` hold; TokenRejected otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenRejected("the token's signing algorithm is not accepted")
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None)
        if key.declared_alg is not None and key.declared_alg != alg:
            raise TokenRejected("the token's algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.jwk.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("the token was issued for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("the token was issued by another issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise TokenRejected("the token is not valid") from None
        return claims

    async def _key(self, kid: str | None) -> _Key:
        keys = self._keys
        if keys is None or time.monotonic() - keys.fetched_at > self.max_age:
            keys = await self._refresh(keys)
        key = keys.pick(kid)
        if key is None:
            # An unknown key id may mean the issuer rotated its keys: look again (at most every refresh_interval).
            keys = await self._refresh(keys)
            key = keys.pick(kid)
        if key is None:
            raise TokenRejected("the token was signed with an unknown key")
        return key

    async def _refresh(self, seen: _Keys | None) -> _Keys:
        """Fetch the JWKS (after discovery, the first time); keep the old keys when the issuer fails."""
        async with self._lock:
            if self._keys is not None and self._keys is not seen:
                return self._keys  # another request refreshed them while this one waited
            now = time.monotonic()
            if now - self._last_attempt < (self.retry_interval if seen is None else self.refresh_interval):
                if seen is None:
                    raise IssuerUnavailable("the token issuer cannot be reached; try again later")
                return seen
            self._last_attempt = now
            try:
                if self._jwks_uri is None:
                    self._jwks_uri = await self._discover()
                fresh = _Keys(_parse_jwks(await self._get_json(self._jwks_uri)), time.monotonic())
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("oidc issuer unreachable", issuer=self.issuer, error=_describe(exc))
                if seen is None:
                    raise IssuerUnavailable("the token issuer cannot be reached; try again later") from None
                return seen
            if seen is None:
                log.info("oidc keys loaded", issuer=self.issuer, keys=len(fresh.by_kid))
            self._keys = fresh
            return fresh

    async def _discover(self) -> URL:
        document = await self._get_json(URL(self.issuer + "/.well-known/openid-configuration"))
        if document.get("issuer", "").rstrip("/") != self.issuer:
            raise ValueError("the discovery document names another issuer")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str):
            raise ValueError("the discovery document has no jwks_uri")
        url = URL(uri)
        if url.scheme != "https" and not (url.scheme == "http" and url.host in _LOOPBACK):
            raise ValueError("the jwks_uri is not https")
        return url

    async def _get_json(self, url: URL) -> dict[str, Any]:
        if self._session is None:
            raise ValueError("the verifier has not been started")
        async with self._session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                raise ValueError(f"{url.path} answered {response.status}")
            body = await response.content.read(MAX_DOCUMENT + 1)
        if len(body) > MAX_DOCUMENT:
            raise ValueError(f"{url.path} is too large")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValueError(f"{url.path} is not JSON") from None
        if not isinstance(document, dict):
            raise ValueError(f"{url.path} is not a JSON object")
        return document


def _parse_jwks(document: dict[str, Any]) -> dict[str | None, _Key]:
    """Signing keys by `kid`; keys for encryption, of unknown types or broken are left out."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no keys")
    keys: dict[str | None, _Key] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        declared = entry.get("alg")
        if key.algorithm_name in ALGORITHMS and (declared is None or declared in ALGORITHMS):
            keys[key.key_id] = _Key(key, declared if isinstance(declared, str) else None)
    return keys


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValueError):
        return str(exc)
    return type(exc).__name__
