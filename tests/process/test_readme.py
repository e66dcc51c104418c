"""A newcomer's first minutes, as the README and `make run` tell them: the README's OpenAI SDK snippet and the
Python line `make run` prints, run with the venv's python (the one with `openai`) against a demo gateway."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.demo import STORY
from tests.fakes.gateways import ROOT
from tests.fakes.gateways import demo_gateway as demo_process

README_URL = "http://127.0.0.1:8080"  # where the README's snippet points: `make run`'s gateway
LIMIT = 60  # seconds for one snippet to run, start-up of the SDK included


@pytest.fixture(scope="module")
def demo_gateway() -> Iterator[str]:
    with demo_process() as url:
        yield url


def readme_python() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text("utf-8"), re.M | re.S)
    assert len(blocks) == 1, "the README has one Python snippet"
    return str(blocks[0])


def test_the_readme_snippet_runs_against_the_demo_gateway(demo_gateway: str) -> None:
    snippet = readme_python()
    assert f'base_url="{README_URL}/v1"' in snippet
    done = subprocess.run(
        [sys.executable, "-c", snippet.replace(README_URL, demo_gateway)],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['demo/demo-echo', 'demo/demo-story']", "You said: hi", STORY]


def test_the_readme_says_to_run_it_with_the_venvs_python() -> None:
    before = (ROOT / "README.md").read_text("utf-8").split("```python")[0]
    paragraph = before.rstrip().rsplit("\n\n", 1)[-1].replace("\n", " ")
    assert "`.venv/bin/python try.py`" in paragraph


def test_the_python_line_make_run_prints_runs_with_the_venvs_python(demo_gateway: str) -> None:
    usage = subprocess.run(
        [sys.executable, "-m", "gateway.demo", "--print-usage", "--gateway", demo_gateway],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        cwd=ROOT,
        check=True,
    ).stdout
    # From the interpreter's path to the closing quote of its -c argument (it spans lines).
    found = re.search(r"^  (\S+) -c '.*?'$", usage, re.M | re.S)
    assert found is not None, usage
    command, python = found.group(0).strip(), found.group(1)
    assert (ROOT / python).resolve() == Path(sys.executable).resolve()  # not a bare `python` without `openai`
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=LIMIT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{STORY}\n"


def test_the_upload_commands_make_run_prints_work(demo_gateway: str, tmp_path: Path) -> None:
    usage = subprocess.run(
        [sys.executable, "-m", "gateway.demo", "--print-usage", "--gateway", demo_gateway],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        cwd=ROOT,
        check=True,
    ).stdout
    # The speech command (two lines) writes hello.wav; the upload commands send it.
    speech = re.search(r"^  curl -s \S+/v1/audio/speech .*?-o hello.wav$", usage, re.M | re.S)
    uploads = re.findall(r"^  curl -s \S+/v1/(?:audio/transcriptions|audio/translations|images/edits) .*$", usage, re.M)
    assert speech is not None and len(uploads) == 3, usage
    outputs = []
    for command in [speech.group(0), *uploads]:
        done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=LIMIT, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    size = (tmp_path / "hello.wav").stat().st_size
    heard = f"heard {size} bytes of hello.wav"
    assert outputs[1] == f"1\n00:00:00,000 --> 00:00:01,000\n{heard}\n".encode()
    assert orjson.loads(outputs[2]) == {"text": heard}
    assert orjson.loads(outputs[3])["data"][0]["b64_json"]


def test_the_readme_curl_for_the_inference_api_runs_against_the_demo_gateway(demo_gateway: str) -> None:
    blocks = re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text("utf-8"), re.M | re.S)
    (command,) = [block for block in blocks if "/api/v1/inference/chat" in block]
    assert README_URL in command
    done = subprocess.run(
        ["/bin/sh", "-c", command.replace(README_URL, demo_gateway)],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    answer = orjson.loads(done.stdout)
    assert answer["success"] is True
    assert answer["data"]["content"] == "You said: hi" and answer["data"]["provider"] == "demo"
