"""OIDC tokens against a local issuer (discovery + JWKS on 127.0.0.1, keys made in the test)."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization

from gateway.access.auth import ACCESS
from gateway.access.oidc import IssuerUnavailable, OidcVerifier, TokenRejected, looks_like_jwt
from gateway.exchange import EXCHANGE
from tests.fakes.access import Issuer, rsa_key, write_keys
from tests.fakes.bodies import chat
from tests.fakes.gateways import auth_settings, gateway_app
from tests.fakes.net import free_port
from tests.fakes.tables import access_table

Client = TestClient[web.Request, web.Application]
NAMES = web.AppKey("test_client_names", list)


@pytest.fixture
async def issuer(aiohttp_server: Any) -> Issuer:
    found = Issuer(keys={"k1": rsa_key()})
    server: TestServer = await aiohttp_server(found.app())
    found.url = str(server.make_url("")).rstrip("/")
    return found


@pytest.fixture
async def verifier(issuer: Issuer) -> AsyncIterator[OidcVerifier]:
    made = OidcVerifier(issuer.url, "gateway", leeway=30, refresh_interval=0, retry_interval=0)
    await made.start()
    yield made
    await made.close()


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


async def test_a_good_token_gives_its_claims(issuer: Issuer, verifier: OidcVerifier) -> None:
    token = issuer.token(groups=["dev"])
    assert looks_like_jwt(token)
    claims = await verifier.verify(token)
    assert (claims["sub"], claims["aud"], claims["iss"], claims["groups"]) == ("alice", "gateway", issuer.url, ["dev"])
    # The keys are cached: a second token costs no fetch.
    await verifier.verify(issuer.token(sub="bob"))
    assert issuer.jwks_fetches == 1


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda i: i.token(lifetime=-120), "the token has expired"),
        (lambda i: i.token(audience="someone-else"), "the token was issued for another audience"),
        (lambda i: i.token(issuer="https://evil.example.com"), "the token was issued by another issuer"),
        (lambda i: i.token(nbf=int(time.time()) + 600), "the token is not valid yet"),
        (lambda i: i.token("k9", key=rsa_key()), "the token was signed with an unknown key"),
        (lambda i: i.token("k1", key=rsa_key()), "the token's signature does not verify"),
        (lambda i: _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(_claims(i)) + ".", "algorithm is not accepted"),
        (lambda i: _hs256_with_public_key(i), "the token's signing algorithm is not accepted"),
        (lambda i: jwt.encode({"iss": i.url, "aud": "gateway"}, i.keys["k1"], "RS256", {"kid": "k1"}), "'exp'"),
        (lambda i: "eyJhbGciOiJSUzI1NiJ9.not-base64!.x", "not a well-formed JWT"),
    ],
    ids=[
        "expired",
        "audience",
        "issuer",
        "not-yet",
        "unknown-kid",
        "bad-signature",
        "alg-none",
        "hs256",
        "no-exp",
        "junk",
    ],
)
async def test_bad_tokens_are_rejected(issuer: Issuer, verifier: OidcVerifier, make: Any, reason: str) -> None:
    with pytest.raises(TokenRejected, match=reason):
        await verifier.verify(make(issuer))


def _claims(issuer: Issuer) -> dict[str, Any]:
    return {"iss": issuer.url, "aud": "gateway", "sub": "mallory", "exp": int(time.time()) + 300}


def _hs256_with_public_key(issuer: Issuer) -> str:
    """The classic confusion: an HMAC 'signature' keyed with the issuer's public key."""
    pem = issuer.keys["k1"].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    header = _b64({"alg": "HS256", "kid": "k1", "typ": "JWT"})
    payload = _b64(_claims(issuer))
    import hashlib
    import hmac

    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def test_expiry_has_a_small_leeway(issuer: Issuer, verifier: OidcVerifier) -> None:
    assert (await verifier.verify(issuer.token(lifetime=-10)))["sub"] == "alice"


async def test_an_unknown_kid_refetches_the_jwks_once(issuer: Issuer, verifier: OidcVerifier) -> None:
    await verifier.verify(issuer.token())
    issuer.keys["k2"] = rsa_key()  # the issuer rotates
    assert (await verifier.verify(issuer.token("k2")))["sub"] == "alice"
    assert issuer.jwks_fetches == 2
    with pytest.raises(TokenRejected, match="unknown key"):
        await verifier.verify(issuer.token("k3", key=rsa_key()))
    assert issuer.jwks_fetches == 3


async def test_unknown_kids_do_not_hammer_the_issuer(issuer: Issuer) -> None:
    verifier = OidcVerifier(issuer.url, "gateway", refresh_interval=3600)
    await verifier.start()
    try:
        await verifier.verify(issuer.token())
        for _ in range(5):
            with pytest.raises(TokenRejected, match="unknown key"):
                await verifier.verify(issuer.token("k9", key=rsa_key()))
        assert issuer.jwks_fetches == 1
    finally:
        await verifier.close()


async def test_a_discovery_document_naming_another_issuer_is_refused(aiohttp_server: Any) -> None:
    found = Issuer(keys={"k1": rsa_key()})
    server = await aiohttp_server(found.app())
    found.url = "https://other.example.com"
    verifier = OidcVerifier(str(server.make_url("")).rstrip("/"), "gateway", retry_interval=0)
    await verifier.start()
    try:
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(found.token())
    finally:
        await verifier.close()


# --- through the gateway ----------------------------------------------------------------------------------------


async def _gateway(aiohttp_client: Any, issuer_url: str, upstream_url: str, **extra: Any) -> Client:
    settings = auth_settings(auth_oidc_issuer=issuer_url, auth_oidc_client_id="gateway", **extra)
    app = gateway_app(settings, access_table(upstream_url))
    names: list[Any] = []

    @web.middleware
    async def spy(request: web.Request, handler: Any) -> Any:
        names.append(request[EXCHANGE].client_name)
        return await handler(request)

    app.middlewares.append(spy)
    app[NAMES] = names
    client: Client = await aiohttp_client(app)
    return client


async def test_gateway_accepts_a_token_and_names_the_client(
    aiohttp_client: Any, issuer: Issuer, upstream_url: str
) -> None:
    gw = await _gateway(aiohttp_client, issuer.url, upstream_url)
    response = await gw.post(
        "/v1/chat/completions", json=chat("fake/alpha-1"), headers={"Authorization": f"Bearer {issuer.token()}"}
    )
    assert response.status == 200
    assert gw.app[NAMES] == ["oidc:alice"]
    refused = await gw.get("/v1/models", headers={"Authorization": f"Bearer {issuer.token(lifetime=-300)}"})
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="llm-gateway", error="invalid_token"'
    assert orjson.loads(await refused.read())["error"] == {
        "message": "the token has expired",
        "type": "authentication_error",
        "code": "invalid_api_key",
    }


async def test_a_claim_picks_the_policy(aiohttp_client: Any, issuer: Issuer, upstream_url: str, tmp_path: Path) -> None:
    keys = write_keys(tmp_path, {}, {"default": {"inference": False}, "team": {"models": ["fake/beta-*"]}})
    gw = await _gateway(
        aiohttp_client, issuer.url, upstream_url, auth_keys_file=str(keys.path), auth_oidc_policy_claim="groups"
    )

    async def status(token: str, model: str = "fake/beta-1") -> int:
        response = await gw.post("/v1/chat/completions", json=chat(model), headers={"Authorization": f"Bearer {token}"})
        return response.status

    assert await status(issuer.token(groups=["other", "team"])) == 200
    assert await status(issuer.token(groups="team"), "fake/alpha-1") == 403
    assert await status(issuer.token()) == 402  # no claim: the `default` policy
    unknown = await gw.get("/v1/models", headers={"Authorization": f"Bearer {issuer.token(groups=['nobody'])}"})
    assert unknown.status == 403
    assert orjson.loads(await unknown.read())["error"]["code"] == "unknown_policy"


async def test_issuer_down_at_start_up_fails_tokens_until_it_answers(
    aiohttp_client: Any, aiohttp_server: Any, upstream_url: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = await _gateway(aiohttp_client, url, upstream_url)
    verifier = gw.app[ACCESS].oidc
    assert verifier is not None
    verifier.retry_interval = 0
    found = Issuer(keys={"k1": rsa_key()}, url=url)
    token = found.token()
    response = await gw.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401
    assert orjson.loads(await response.read())["error"]["message"] == (
        "the token issuer cannot be reached; try again later"
    )
    assert (await gw.get("/health")).status == 200
    await aiohttp_server(found.app(), port=port)
    response = await gw.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200


async def test_api_keys_and_tokens_work_side_by_side(
    aiohttp_client: Any, issuer: Issuer, upstream_url: str, tmp_path: Path
) -> None:
    keys = write_keys(tmp_path, {"svc": {}}, {})
    gw = await _gateway(aiohttp_client, issuer.url, upstream_url, auth_keys_file=str(keys.path))
    assert (await gw.get("/v1/models", headers={"X-API-Key": keys.key("svc")})).status == 200
    assert (await gw.get("/v1/models", headers={"X-API-Key": issuer.token()})).status == 200
    assert gw.app[NAMES] == ["svc", "oidc:alice"]
