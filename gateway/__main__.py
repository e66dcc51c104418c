"""Command line: `python -m gateway [--host H] [--port P] [--providers FILE]` starts the gateway."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

import structlog

from .app import create_app
from .errors import ConfigError
from .logs import configure_logging
from .providers import ProviderTable, load_table
from .server import run
from .settings import Settings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible LLM gateway")
    parser.add_argument("--host", help="address to listen on (env SERVER_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (env SERVER_PORT, default 8080)")
    parser.add_argument("--providers", help="providers file (env PROVIDERS_FILE, default ./providers.yaml)")
    return parser.parse_args(argv)


def load(argv: Sequence[str] | None, env: dict[str, str]) -> tuple[Settings, ProviderTable]:
    args = parse_args(argv)
    settings = Settings.from_env(env)
    settings = replace(
        settings,
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
        providers_file=args.providers or settings.providers_file,
    )
    return settings, load_table(settings.providers_file, env)


def log_table(table: ProviderTable) -> None:
    log = structlog.get_logger("gateway")
    for provider in table.providers.values():
        if provider.served:
            log.info("provider served", provider=provider.id, url=provider.url, auth=provider.auth_type)
        else:
            log.warning("provider not served", provider=provider.id, reason=provider.unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    env = dict(os.environ)
    try:
        settings, table = load(argv, env)
    except ConfigError as exc:
        print(f"gateway: {exc.render()}", file=sys.stderr)
        return 2
    configure_logging(settings.environment)
    log_table(table)
    return run(create_app(settings, table), settings)


if __name__ == "__main__":
    sys.exit(main())
