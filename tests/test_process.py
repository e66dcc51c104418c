"""The real thing: `python -m gateway` and the demo upstream as processes, as `make run` starts them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, process: subprocess.Popen[bytes], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port} within {limit}s")


@pytest.fixture
def demo_gateway() -> Iterator[str]:
    demo_port, gw_port = free_port(), free_port()
    env = {**os.environ, "DEMO_API_URL": f"http://127.0.0.1:{demo_port}/v1", "ENVIRONMENT": "production"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "gateway.demo", "--port", str(demo_port)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(gw_port),
         "--providers", "config/demo.providers.yaml"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_listening(demo_port, demo)
        wait_listening(gw_port, gw)
        yield f"http://127.0.0.1:{gw_port}"
    finally:
        for process in (gw, demo):
            process.terminate()
        for process in (gw, demo):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if gw.stdout is not None:
            gw.stdout.close()


async def test_the_demo_setup_serves_models_chat_and_streams(demo_gateway: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async with http.get(f"{demo_gateway}/v1/models") as response:
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
