"""A generated provider table of N entries for the "cost does not grow with the table" measurement.

The `bench` provider is the last entry; the others (all served: their key is $BENCH_TABLE_KEY) use every auth
type, aliases and model prefixes of many lengths, so a lookup that scaled with the table would show.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

_AUTH = ("bearer", "xheader", "query", "none")


def _entry(pid: str, url: str, auth: str, prefixes: list[str], aliases: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": pid,
        "url": url,
        "auth_type": auth,
        "supports_vision": False,
        "endpoints": {
            "models": {"name": "list_models", "method": "GET", "endpoint": "/models"},
            "chat": {"name": "chat_completions", "method": "POST", "endpoint": "/chat/completions"},
        },
    }
    if prefixes:
        entry["model_prefixes"] = prefixes
    if aliases:
        entry["aliases"] = aliases
    if auth != "none":
        entry["api_key_env"] = "BENCH_TABLE_KEY"
    if auth == "xheader":
        entry["auth_header"] = "x-api-key"
        entry["headers"] = {"x-provider-version": "2024-01-01"}
    if auth == "query":
        entry["auth_query"] = "key"
    return entry


def table(count: int) -> dict[str, Any]:
    providers: dict[str, Any] = {}
    for index in range(count - 1):
        pid = f"p{index:03d}"
        auth = _AUTH[index % len(_AUTH)]
        # Prefix lengths from 4 to 23 characters, so a lookup by prefix meets many lengths.
        prefix = f"m{index:03d}-" + "x" * (index % 20)
        providers[pid] = _entry(pid, f"https://{pid}.invalid/v1", auth, [prefix], [f"{pid}-alias"])
    providers["bench"] = _entry("bench", "http://127.0.0.1:9101/v1", "none", ["bench-"], [])
    # The mock upstream picks its answer by X-Bench: like bench/providers.yaml, the entry lets it through.
    providers["bench"]["forward_headers"] = ["X-Bench"]
    return {"providers": providers}


def write(path: Path, count: int) -> Path:
    path.write_text(yaml.safe_dump(table(count), sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("count", type=int)
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    write(args.path, args.count)


if __name__ == "__main__":
    main()
