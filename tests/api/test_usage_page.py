"""The usage page in a real browser (Debian's chromium, headless, through Selenium) against a gateway process with
known traffic: a week of seeded rows plus live requests made with the official OpenAI SDK. The page asks for a key,
keeps it only in memory, and shows the figures the traffic makes: checked one by one."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from gateway.usage.store import open_store
from tests.fakes.access import write_keys
from tests.fakes.browser import chromium, require_browser
from tests.fakes.gateways import gateway_args, running
from tests.fakes.net import free_port
from tests.fakes.usage import tool_row, usage_row

PRICES = {"demo-echo": (0.5, 1.5), "demo-story": (3.0, 15.0)}  # config/demo.providers.yaml, per million
SCREENSHOT = os.environ.get("USAGE_PAGE_SCREENSHOT")  # also save the screenshot there (docs/usage-page.png)


def seeded(now: float) -> list[tuple[Any, ...]]:
    """Three days of earlier traffic, a few requests an hour, from three clients on both demo models."""
    rows = []
    clients = ("alice", "ci-bot", "bob")
    for hour in range(1, 72):
        for n in range(1 + hour * 7 % 4):
            model = "demo-story" if (hour + n) % 3 == 0 else "demo-echo"
            tokens_in, tokens_out = 20 + hour % 13 * 9 + n, 40 + hour % 7 * 30
            price_in, price_out = PRICES[model]
            failed = (hour + n) % 17 == 0
            rows.append(
                usage_row(
                    request_id=f"seed-{hour}-{n}",
                    ts=now - hour * 3600 - n * 300,
                    client=clients[(hour + n) % 3],
                    provider="demo",
                    model=model,
                    model_requested=model,
                    status=502 if failed else 200,
                    error_type="connect" if failed else None,
                    duration_ms=80.0 + (hour * 37 + n * 11) % 400,
                    input_tokens=None if failed else tokens_in,
                    output_tokens=None if failed else tokens_out,
                    cost=None if failed else (tokens_in * price_in + tokens_out * price_out) / 1e6,
                    stream=model == "demo-story",
                )
            )
    return rows


def money(value: float) -> str:
    return f"${value:.2f}" if value >= 1 else f"${value:.6f}"


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def live_traffic(base: str, alice: str, bob: str) -> list[tuple[str, int, int, int]]:
    """Requests through the gateway with the SDK: (client, status, input tokens, output tokens) each."""
    done = []
    for key, client, model, stream in (
        (alice, "alice", "demo-echo", False),
        (alice, "alice", "demo-echo", False),
        (alice, "alice", "demo-story", True),
        (bob, "bob", "demo-echo", False),
    ):
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=10)
        messages: Any = [{"role": "user", "content": "hello there"}]
        if stream:
            usage = None
            for chunk in sdk.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            ):
                usage = chunk.usage or usage
            assert usage is not None
        else:
            usage = sdk.chat.completions.create(model=model, messages=messages).usage
            assert usage is not None
        done.append((client, 200, usage.prompt_tokens, usage.completion_tokens))
    refused = openai.OpenAI(base_url=f"{base}/v1", api_key=alice, max_retries=0, timeout=10)
    with pytest.raises(openai.NotFoundError):
        refused.chat.completions.create(model="nope-model", messages=[{"role": "user", "content": "hi"}])
    done.append(("alice", 404, 0, 0))
    return done


def wait_rows(base: str, key: str, count: int) -> dict[str, Any]:
    for _ in range(300):
        asked = urllib.request.Request(f"{base}/v1/usage", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(asked, timeout=10) as answer:
            body: dict[str, Any] = orjson.loads(answer.read())
        if body["summary"]["requests"] >= count:
            return body
        time.sleep(0.05)
    raise AssertionError(f"the usage rows did not arrive: {body}")


def open_page(driver: WebDriver, base: str, key: str) -> None:
    driver.get(f"{base}/usage")
    wait = WebDriverWait(driver, 20)
    # No key yet: the API says 401 and the page asks for one.
    wait.until(lambda d: d.find_element(By.ID, "key-form").is_displayed())
    assert "needs an API key" in driver.find_element(By.ID, "message").text
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1")


def shown(driver: WebDriver, metric: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f'[data-metric="{metric}"]').text)


def table(driver: WebDriver, group: str) -> list[tuple[str, str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, f'table[data-group="{group}"] tbody tr')
    return [(r.find_elements(By.TAG_NAME, "td")[0].text, r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows]


def test_the_page_shows_the_traffic(tmp_path: Path) -> None:
    require_browser()  # before anything starts
    db = tmp_path / "usage.db"
    now = time.time()
    history = seeded(now)

    async def seed() -> None:
        store = open_store(str(db))
        await store.open()
        # One seeded request ran an MCP tool: its record shows the call.
        await store.insert(history, [tool_row(request_id="seed-1-0", ts=now - 3600 + 0.01, duration_ms=12.5)])
        await store.close()

    asyncio.run(seed())
    keys = write_keys(tmp_path, {"alice": {}, "bob": {"policy": "ops"}}, {"ops": {"admin": True}})
    demo_port, port = free_port(), free_port()
    env = {
        **os.environ,
        "DEMO_API_URL": f"http://127.0.0.1:{demo_port}/v1",
        "USAGE_STORE": str(db),
        "USAGE_FLUSH_INTERVAL": "0.05",
        "AUTH_ENABLE": "true",
        "AUTH_KEYS_FILE": str(keys.path),
    }
    base = f"http://127.0.0.1:{port}"
    with running(["gateway.demo", "--port", str(demo_port)], env, demo_port), running(gateway_args(port), env, port):
        live = live_traffic(base, keys.key("alice"), keys.key("bob"))
        api = wait_rows(base, keys.key("bob"), len(history) + len(live))
        # What the traffic makes, counted here from the seeded rows and what the SDK was told.
        requests = len(history) + len(live)
        errors = sum(1 for r in history if r[10] >= 400) + sum(1 for r in live if r[1] >= 400)
        tokens_in = sum(r[14] or 0 for r in history) + sum(r[2] for r in live)
        tokens_out = sum(r[15] or 0 for r in history) + sum(r[3] for r in live)
        live_cost = sum(
            (r[2] * PRICES[m][0] + r[3] * PRICES[m][1]) / 1e6
            for r, m in zip(live, ("demo-echo", "demo-echo", "demo-story", "demo-echo", "demo-echo"), strict=True)
        )
        cost = sum(r[17] or 0 for r in history) + live_cost
        summary = api["summary"]
        assert (summary["requests"], summary["errors"]) == (requests, errors)
        assert (summary["input_tokens"], summary["output_tokens"]) == (tokens_in, tokens_out)
        assert summary["cost"] == pytest.approx(cost, abs=1e-6)

        with chromium() as driver:
            open_page(driver, base, keys.key("bob"))
            assert shown(driver, "requests") == f"{requests:,}"
            assert shown(driver, "errors") == f"{errors:,}"
            assert shown(driver, "error_rate") == f"{100 * errors / requests:.1f}%"
            assert shown(driver, "input_tokens") == f"{tokens_in:,}"
            assert shown(driver, "output_tokens") == f"{tokens_out:,}"
            assert shown(driver, "total_tokens") == f"{tokens_in + tokens_out:,}"
            assert shown(driver, "cost") == money(summary["cost"])
            assert shown(driver, "p50_duration_ms") == ms(summary["p50_duration_ms"])
            assert shown(driver, "p95_duration_ms") == ms(summary["p95_duration_ms"])
            clients: dict[str, int] = {}
            for r in history:
                clients[r[2]] = clients.get(r[2], 0) + 1
            for r in live:
                clients[r[0]] = clients.get(r[0], 0) + 1
            assert sorted(table(driver, "client")) == sorted((c, f"{n:,}") for c, n in clients.items())
            models = dict(table(driver, "model"))
            assert models["nope-model"] == "1"
            assert int(models["demo-echo"].replace(",", "")) + int(models["demo-story"].replace(",", "")) == (
                requests - 1
            )
            assert [
                cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#by-provider tbody td:first-child")
            ] == ["demo", "(none)"]  # the refused request reached no provider
            # Four charts drawn, with one bar series per time bucket.
            assert len(driver.find_elements(By.CSS_SELECTOR, ".panel svg")) == 4
            latest = driver.find_elements(By.CSS_SELECTOR, "#latest tbody tr")
            assert len(latest) == 25
            newest = latest[0]
            assert newest.find_elements(By.TAG_NAME, "td")[4].text == "404"
            assert newest.find_elements(By.TAG_NAME, "td")[2].text == "nope-model"
            driver.save_screenshot(str(tmp_path / "usage-page.png"))
            if SCREENSHOT:
                driver.save_screenshot(SCREENSHOT)
            # The latest request's link opens its record.
            request_id = newest.get_attribute("data-request-id")
            newest.find_element(By.TAG_NAME, "a").click()
            WebDriverWait(driver, 10).until(
                lambda d: f'"request_id": "{request_id}"' in d.find_element(By.ID, "record-body").text
            )
            assert '"status": 404' in driver.find_element(By.ID, "record-body").text
            assert '"tool_calls": []' in driver.find_element(By.ID, "record-body").text
            driver.execute_script("location.hash = '#request=seed-1-0'")
            WebDriverWait(driver, 10).until(
                lambda d: '"request_id": "seed-1-0"' in d.find_element(By.ID, "record-body").text
            )
            record = orjson.loads(driver.find_element(By.ID, "record-body").text)
            assert [(c["server"], c["tool"], c["outcome"], c["duration_ms"]) for c in record["tool_calls"]] == [
                ("files", "files__add", "ok", 12.5)
            ]
            # The key was never stored by the page.
            assert driver.execute_script("return [localStorage.length, sessionStorage.length, document.cookie]") == [
                0,
                0,
                "",
            ]
            # A reload forgets the key; a client that is not admin sees only its own rows.
            open_page(driver, base, keys.key("alice"))
            alice = clients["alice"]
            assert shown(driver, "requests") == f"{alice:,}"
            assert table(driver, "client") == [("alice", f"{alice:,}")]
