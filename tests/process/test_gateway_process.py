"""The real thing: `python -m gateway` and the demo upstream as processes, as `make run` starts them."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.gateways import demo_gateway as demo_process
from tests.fakes.gateways import gateway_args, running
from tests.fakes.net import free_port


@pytest.fixture
def demo_gateway() -> Iterator[str]:
    with demo_process() as url:
        yield url


async def test_the_demo_setup_serves_models_chat_and_streams(demo_gateway: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async with http.get(f"{demo_gateway}/v1/models?service_type=llm") as response:
            ids = [m["id"] for m in (await response.json())["data"]]
        assert ids == ["demo/demo-echo", "demo/demo-story"]
        chat = {"model": "demo/demo-echo", "messages": [{"role": "user", "content": "ping"}]}
        async with http.post(f"{demo_gateway}/v1/chat/completions", json=chat) as response:
            answer = await response.json()
        assert answer["choices"][0]["message"]["content"] == "You said: ping"
        chat = {"model": "demo-story", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        events = []
        async with http.post(f"{demo_gateway}/v1/chat/completions", json=chat) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            async for line in response.content:
                if line.startswith(b"data: "):
                    events.append(line[6:].strip())
        assert events[-1] == b"[DONE]"
        assert len(events) > 5


def test_the_console_script_and_module_share_one_cli() -> None:
    script = Path(sys.executable).parent / "gateway"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert "--providers" in done.stdout and "--port" in done.stdout


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    env = {**os.environ, "SERVER_TLS_CERT_PATH": str(cert), "SERVER_TLS_KEY_PATH": str(key)}
    with running(gateway_args(port), env, port):
        yield port, cert


async def test_tls_is_served_when_a_cert_and_key_are_set(tls_gateway: tuple[int, Path]) -> None:
    port, cert = tls_gateway
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    async with aiohttp.ClientSession() as http, http.get(f"https://127.0.0.1:{port}/health", ssl=context) as r:
        assert r.status == 200 and await r.json() == {"message": "OK"}
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as r:
            await r.read()
