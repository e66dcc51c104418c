"""Command line: `python -m gateway [--host H] [--port P] [--providers FILE]` starts the gateway;
`python -m gateway keys new NAME` makes a client API key (see gateway/access/keys.py)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

import structlog

from gateway import __version__
from gateway.access import keys
from gateway.app import create_app
from gateway.config.providers import ProviderTable, load_table
from gateway.config.settings import Settings
from gateway.errors import ConfigError
from gateway.server import CannotListen, run
from gateway.telemetry.logs import configure_logging
from gateway.telemetry.redact import secret_values
from gateway.upstream.http1.pool import proxy_problems

EXIT_CONFIG = 2  # a bad setting or table, or a listener that cannot bind: nothing was served

EPILOG = """\
client API keys (for AUTH_ENABLE):
  gateway keys new NAME [--policy P]   make a key: printed once, with its line for the keys file
  gateway keys check FILE              validate a keys file
"""


def listen_hint(exc: CannotListen) -> str:
    """What to change when a listener cannot bind."""
    if exc.setting == "TELEMETRY_METRICS_PORT":
        return "pick another port: TELEMETRY_METRICS_PORT=N (make run METRICS_PORT=N)"
    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
        return "pick another port: --port N or SERVER_PORT=N (make run PORT=N)"
    return "check the address: --host or SERVER_HOST (make run HOST=...)"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="OpenAI-compatible LLM gateway",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    problems = proxy_problems(env)
    if problems:
        raise ConfigError("environment", problems)
    return settings, load_table(settings.providers_file, env)


def log_table(table: ProviderTable) -> None:
    """One line per provider: served (where, how it authenticates) or not served and why; then a summary."""
    log = structlog.get_logger("gateway")
    for provider in table.providers.values():
        if provider.served:
            log.info(
                "provider served",
                provider=provider.id,
                url=provider.url,
                auth=provider.auth_type,
                stream_usage=provider.stream_usage,
            )
        else:
            log.warning("provider not served", provider=provider.id, reason=provider.unavailable)
    served = sum(1 for p in table.providers.values() if p.served)
    log.info("provider table loaded", source=table.source, served=served, total=len(table.providers))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["keys"]:
        return keys.cli(args[1:])
    env = dict(os.environ)
    try:
        settings, table = load(argv, env)
        configure_logging(settings.environment, secrets=secret_values(env, table))
        app = create_app(settings, table)  # reads the keys file when client auth is on
    except ConfigError as exc:
        print(f"gateway: {exc.render()}", file=sys.stderr)
        return EXIT_CONFIG
    log_table(table)
    try:
        return run(app, settings)
    except CannotListen as exc:  # one line, not a traceback: the port is taken, or the address is not this host's
        print(f"gateway: {exc}; {listen_hint(exc)}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
