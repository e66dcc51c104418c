"""Process settings from the environment: the spec's `Config` section (general, server, client), read once.

Everything is a pure function of the mapping passed in, so tests hand in a dict instead of patching os.environ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.errors import ConfigError

Environment = Literal["production", "development"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
# Go's units, and days (`d`) for retention periods.
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_duration(text: str) -> float:
    """Parse a Go-style duration (`30s`, `1m30s`, `500ms`) or a bare number of seconds into seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 1m30s, 500ms)")
    return total


def parse_model_list(text: str) -> tuple[str, ...]:
    """Comma-separated model entries, trimmed and lower-cased; empty entries dropped."""
    return tuple(item.strip().lower() for item in text.split(",") if item.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    environment: Environment = "production"
    allowed_models: tuple[str, ...] = ()
    disallowed_models: tuple[str, ...] = ()
    enable_vision: bool = False
    debug_content_truncate_words: int = 10
    debug_max_messages: int = 100
    # server
    host: str = "0.0.0.0"
    port: int = 8080
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    idle_timeout: float = 120.0
    tls_cert_path: str | None = None
    tls_key_path: str | None = None
    max_request_body_size: int = 10 * 1024 * 1024
    # Memory all request bodies in flight may take together (their bytes and what parsing them builds); 0: no limit
    max_body_memory: int = 192 * 1024 * 1024
    # shutdown: the whole budget from SIGTERM to exit, and the part of it spent still accepting while unready
    drain_timeout: float = 25.0
    shutdown_delay: float = 0.0
    # client (towards providers)
    client_timeout: float = 30.0
    connect_timeout: float = 10.0
    response_header_timeout: float = 10.0
    stream_idle_timeout: float = 120.0
    max_idle_conns: int = 20
    max_idle_conns_per_host: int = 20
    max_conns: int = 0
    idle_conn_timeout: float = 30.0
    tls_min_version: Literal["TLS12", "TLS13"] = "TLS12"
    disable_compression: bool = True
    expect_continue_timeout: float = 1.0
    providers_file: str = "providers.yaml"
    # Observability
    telemetry_enable: bool = False
    telemetry_metrics_port: int = 9464
    # Client keys, OIDC, per-key limits shared through Redis
    auth_enable: bool = False
    auth_keys_file: str | None = None
    auth_keys_reload_interval: float = 10.0
    auth_oidc_issuer: str | None = None
    auth_oidc_client_id: str | None = None
    auth_oidc_client_secret: str | None = field(default=None, repr=False)  # read, never used nor shown
    auth_oidc_policy_claim: str | None = None
    auth_oidc_name_claim: str = "sub"
    auth_oidc_leeway: float = 30.0
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    ratelimit_fail_open: bool = True
    # Output tokens a request reserves from a token budget when its body sets no max_tokens (or the like).
    ratelimit_reserve_output_tokens: int = 1024
    redis_timeout: float = 0.25
    redis_retry_interval: float = 5.0
    # Retries before the first byte, and hot reload of the provider table
    max_retries: int = 2
    retry_backoff: float = 0.25
    retry_backoff_max: float = 4.0
    retry_after_max: float = 20.0
    reload_interval: float = 2.0  # 0 turns file polling off; SIGHUP still reloads
    # The usage store (gateway/usage/): a SQLite file path, a postgresql:// URL (may hold a password), or None (off)
    usage_store: str | None = field(default=None, repr=False)
    usage_retention: float = 30 * 86400.0  # rows older than this are deleted in the background; 0 keeps them
    usage_queue_size: int = 10_000  # rows waiting for the writer; beyond it rows are dropped and counted
    usage_batch_size: int = 500
    usage_flush_interval: float = 1.0
    usage_api_enable: bool = False  # the usage API with client auth off (it shows everyone's usage)
    usage_store_bodies: bool = False  # keep request and answer bodies, truncated and redacted, with each row
    # Changes to the Inference API's provider registry and model sync with client auth off (anyone could make them)
    registry_write_enable: bool = False
    # MCP: tools of Model Context Protocol servers for chat clients (gateway/mcp)
    mcp_enable: bool = False
    mcp_expose: bool = False
    mcp_servers: tuple[McpServer, ...] = ()
    mcp_client_timeout: float = 5.0
    mcp_dial_timeout: float = 3.0
    mcp_tls_handshake_timeout: float = 3.0
    mcp_response_header_timeout: float = 3.0
    mcp_expect_continue_timeout: float = 1.0
    mcp_request_timeout: float = 5.0
    mcp_max_retries: int = 3
    mcp_retry_interval: float = 5.0
    mcp_initial_backoff: float = 1.0
    mcp_enable_reconnect: bool = True
    mcp_reconnect_interval: float = 30.0
    mcp_polling_enable: bool = True
    mcp_polling_interval: float = 30.0
    mcp_polling_timeout: float = 5.0
    mcp_disable_healthcheck_logs: bool = True
    # The chat loop's bounds: model turns per request, and the whole loop's wall-clock budget
    mcp_max_iterations: int = 10
    mcp_loop_timeout: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; every bad value is reported at once."""
        reader = _Reader(env)
        environment = reader.choice("ENVIRONMENT", ("production", "development"), "production")
        tls_min = reader.choice("CLIENT_TLS_MIN_VERSION", ("TLS12", "TLS13"), "TLS12")
        settings = cls(
            environment="development" if environment == "development" else "production",
            allowed_models=parse_model_list(env.get("ALLOWED_MODELS", "")),
            disallowed_models=parse_model_list(env.get("DISALLOWED_MODELS", "")),
            enable_vision=reader.boolean("ENABLE_VISION", False),
            debug_content_truncate_words=reader.integer("DEBUG_CONTENT_TRUNCATE_WORDS", 10),
            debug_max_messages=reader.integer("DEBUG_MAX_MESSAGES", 100),
            host=env.get("SERVER_HOST", "0.0.0.0") or "0.0.0.0",
            port=reader.port("SERVER_PORT", 8080),
            read_timeout=reader.duration("SERVER_READ_TIMEOUT", 30.0),
            write_timeout=reader.duration("SERVER_WRITE_TIMEOUT", 30.0),
            idle_timeout=reader.duration("SERVER_IDLE_TIMEOUT", 120.0),
            tls_cert_path=env.get("SERVER_TLS_CERT_PATH") or None,
            tls_key_path=env.get("SERVER_TLS_KEY_PATH") or None,
            max_request_body_size=reader.integer("SERVER_MAX_REQUEST_BODY_SIZE", 10 * 1024 * 1024),
            max_body_memory=reader.integer("SERVER_MAX_BODY_MEMORY", 192 * 1024 * 1024),
            drain_timeout=reader.duration("SERVER_DRAIN_TIMEOUT", 25.0),
            shutdown_delay=reader.duration("SERVER_SHUTDOWN_DELAY", 0.0, allow_zero=True),
            client_timeout=reader.duration("CLIENT_TIMEOUT", 30.0),
            connect_timeout=reader.duration("CLIENT_CONNECT_TIMEOUT", 10.0),
            response_header_timeout=reader.duration("CLIENT_RESPONSE_HEADER_TIMEOUT", 10.0),
            stream_idle_timeout=reader.duration("CLIENT_STREAM_IDLE_TIMEOUT", 120.0),
            max_idle_conns=reader.integer("CLIENT_MAX_IDLE_CONNS", 20),
            max_idle_conns_per_host=reader.integer("CLIENT_MAX_IDLE_CONNS_PER_HOST", 20),
            max_conns=reader.integer("CLIENT_MAX_CONNS", 0),
            idle_conn_timeout=reader.duration("CLIENT_IDLE_CONN_TIMEOUT", 30.0),
            tls_min_version="TLS13" if tls_min == "TLS13" else "TLS12",
            disable_compression=reader.boolean("CLIENT_DISABLE_COMPRESSION", True),
            expect_continue_timeout=reader.duration("CLIENT_EXPECT_CONTINUE_TIMEOUT", 1.0),
            providers_file=env.get("PROVIDERS_FILE", "providers.yaml") or "providers.yaml",
            # The spec says TELEMETRY_ENABLE, the Go gateway TELEMETRY_ENABLED.
            telemetry_enable=reader.boolean("TELEMETRY_ENABLE", reader.boolean("TELEMETRY_ENABLED", False)),
            telemetry_metrics_port=reader.port("TELEMETRY_METRICS_PORT", 9464),
            # Access control
            auth_enable=_auth_enable(reader),
            auth_keys_file=reader.text("AUTH_KEYS_FILE"),
            auth_keys_reload_interval=reader.duration("AUTH_KEYS_RELOAD_INTERVAL", 10.0),
            auth_oidc_issuer=(reader.text("AUTH_OIDC_ISSUER") or "").rstrip("/") or None,
            auth_oidc_client_id=reader.text("AUTH_OIDC_CLIENT_ID"),
            auth_oidc_client_secret=reader.text("AUTH_OIDC_CLIENT_SECRET"),
            auth_oidc_policy_claim=reader.text("AUTH_OIDC_POLICY_CLAIM"),
            auth_oidc_name_claim=reader.text("AUTH_OIDC_NAME_CLAIM") or "sub",
            auth_oidc_leeway=reader.duration("AUTH_OIDC_LEEWAY", 30.0),
            redis_url=reader.text("REDIS_URL"),
            ratelimit_fail_open=reader.choice("RATELIMIT_REDIS_FAILURE", ("open", "closed"), "open") == "open",
            ratelimit_reserve_output_tokens=reader.integer("RATELIMIT_RESERVE_OUTPUT_TOKENS", 1024),
            redis_timeout=reader.duration("REDIS_TIMEOUT", 0.25),
            redis_retry_interval=reader.duration("REDIS_RETRY_INTERVAL", 5.0),
            # Resilience
            max_retries=reader.integer("CLIENT_MAX_RETRIES", 2),
            retry_backoff=reader.duration("CLIENT_RETRY_BACKOFF", 0.25),
            retry_backoff_max=reader.duration("CLIENT_RETRY_BACKOFF_MAX", 4.0),
            retry_after_max=reader.duration("CLIENT_RETRY_AFTER_MAX", 20.0),
            reload_interval=(
                0.0
                if (env.get("PROVIDERS_RELOAD_INTERVAL") or "").strip().lower() in ("0", "off")
                else reader.duration("PROVIDERS_RELOAD_INTERVAL", 2.0)
            ),
            usage_store=_usage_store(reader),
            usage_retention=reader.duration("USAGE_RETENTION", 30 * 86400.0, allow_zero=True),
            usage_queue_size=reader.integer("USAGE_QUEUE_SIZE", 10_000, minimum=1),
            usage_batch_size=reader.integer("USAGE_BATCH_SIZE", 500, minimum=1),
            usage_flush_interval=reader.duration("USAGE_FLUSH_INTERVAL", 1.0),
            usage_api_enable=reader.boolean("USAGE_API_ENABLE", False),
            usage_store_bodies=reader.boolean("USAGE_STORE_BODIES", False),
            registry_write_enable=reader.boolean("REGISTRY_WRITE_ENABLE", False),
            **_mcp_settings(reader),
        )
        reader.errors.extend(_auth_problems(settings))
        if (settings.tls_cert_path is None) != (settings.tls_key_path is None):
            reader.errors.append("SERVER_TLS_CERT_PATH and SERVER_TLS_KEY_PATH must be set together")
        if settings.telemetry_enable and settings.port and settings.telemetry_metrics_port == settings.port:
            reader.errors.append(
                "TELEMETRY_METRICS_PORT must differ from SERVER_PORT (metrics have their own listener)"
            )
        if settings.shutdown_delay >= settings.drain_timeout:
            reader.errors.append("SERVER_SHUTDOWN_DELAY must be below SERVER_DRAIN_TIMEOUT (the delay is part of it)")
        if reader.errors:
            raise ConfigError("environment", reader.errors)
        return settings

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_path is not None


def _usage_store(reader: _Reader) -> str | None:
    """USAGE_STORE: `off` (or unset) for none, a postgresql:// URL, or a SQLite file (a path or sqlite:///path)."""
    raw = reader.text("USAGE_STORE")
    if raw is None or raw.lower() in ("off", "none", "false", "0"):
        return None
    scheme = raw.partition("://")[0].lower() if "://" in raw else ""
    if scheme in ("postgresql", "postgres", "sqlite"):
        if scheme == "sqlite" and not raw[len("sqlite://") :].strip("/"):
            reader.errors.append("USAGE_STORE: sqlite:// needs a file path (sqlite:///var/lib/gateway/usage.db)")
        return raw
    if scheme:
        # The scheme is named, never the URL: it may hold a password.
        reader.errors.append(
            f"USAGE_STORE: {scheme}:// is not a store (use a file path, sqlite:///path or postgresql://)"
        )
        return None
    return raw


@dataclass(frozen=True, slots=True)
class McpServer:
    """One entry of MCP_SERVERS: the name its tools are prefixed with (`<name>__<tool>`) and its URL."""

    name: str
    url: str


# A server's name becomes part of tool names, which OpenAI limits to ^[a-zA-Z0-9_-]{1,64}$: short, and without
# `__`, the separator of the prefix.
_MCP_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_)){0,23}$")
_NOT_NAME_CHAR = re.compile(r"[^A-Za-z0-9]+")


def parse_mcp_servers(text: str) -> tuple[tuple[McpServer, ...], list[str]]:
    """MCP_SERVERS: comma- or space-separated entries, each `name=url` or a bare URL (named after its host, its
    first label: `http://mcp-files:8083/mcp` -> `mcp-files`). Problems are returned, not raised, to be reported
    with every other bad variable."""
    servers: list[McpServer] = []
    problems: list[str] = []
    for entry in text.replace(",", " ").split():
        name, equals, url = entry.partition("=")
        if not equals or "://" in name:
            name, url = "", entry
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"MCP_SERVERS: {entry!r} is not an http:// or https:// URL")
            continue
        if not name:
            name = _NOT_NAME_CHAR.sub("-", parts.hostname.split(".")[0] if not _is_ip(parts.hostname) else "mcp")
            name = name.strip("-")[:24] or "mcp"
        if not _MCP_NAME.match(name):
            problems.append(
                f"MCP_SERVERS: the name {name!r} must be letters, digits, - and single _ (up to 24), to prefix tools"
            )
            continue
        if any(server.name == name for server in servers):
            problems.append(f"MCP_SERVERS: two servers are named {name!r}; name them (`name=url`)")
            continue
        servers.append(McpServer(name, url))
    return tuple(servers), problems


def _is_ip(host: str) -> bool:
    return ":" in host or host.replace(".", "").isdigit()


def _mcp_settings(reader: _Reader) -> dict[str, Any]:
    """The MCP_* variables (the spec's, with its defaults) and the loop's bounds."""
    servers, problems = parse_mcp_servers(reader.env.get("MCP_SERVERS", ""))
    reader.errors.extend(problems)
    # The spec's 403 message says EXPOSE_MCP while its settings table says MCP_EXPOSE: both are read.
    exposed = {name: reader.boolean(name, False) for name in ("MCP_EXPOSE", "EXPOSE_MCP") if reader.text(name)}
    if len(set(exposed.values())) > 1:
        reader.errors.append("MCP_EXPOSE and EXPOSE_MCP disagree: set one of them")
    values: dict[str, Any] = {
        "mcp_enable": reader.boolean("MCP_ENABLE", False),
        "mcp_expose": any(exposed.values()),
        "mcp_servers": servers,
        "mcp_client_timeout": reader.duration("MCP_CLIENT_TIMEOUT", 5.0),
        "mcp_dial_timeout": reader.duration("MCP_DIAL_TIMEOUT", 3.0),
        "mcp_tls_handshake_timeout": reader.duration("MCP_TLS_HANDSHAKE_TIMEOUT", 3.0),
        "mcp_response_header_timeout": reader.duration("MCP_RESPONSE_HEADER_TIMEOUT", 3.0),
        "mcp_expect_continue_timeout": reader.duration("MCP_EXPECT_CONTINUE_TIMEOUT", 1.0),
        "mcp_request_timeout": reader.duration("MCP_REQUEST_TIMEOUT", 5.0),
        "mcp_max_retries": reader.integer("MCP_MAX_RETRIES", 3),
        "mcp_retry_interval": reader.duration("MCP_RETRY_INTERVAL", 5.0),
        "mcp_initial_backoff": reader.duration("MCP_INITIAL_BACKOFF", 1.0),
        "mcp_enable_reconnect": reader.boolean("MCP_ENABLE_RECONNECT", True),
        "mcp_reconnect_interval": reader.duration("MCP_RECONNECT_INTERVAL", 30.0),
        "mcp_polling_enable": reader.boolean("MCP_POLLING_ENABLE", True),
        "mcp_polling_interval": reader.duration("MCP_POLLING_INTERVAL", 30.0),
        "mcp_polling_timeout": reader.duration("MCP_POLLING_TIMEOUT", 5.0),
        "mcp_disable_healthcheck_logs": reader.boolean("MCP_DISABLE_HEALTHCHECK_LOGS", True),
        "mcp_max_iterations": reader.integer("MCP_MAX_ITERATIONS", 10, minimum=1),
        "mcp_loop_timeout": reader.duration("MCP_LOOP_TIMEOUT", 120.0),
    }
    if values["mcp_enable"] and not servers:
        reader.errors.append("MCP_ENABLE needs MCP_SERVERS (at least one server URL)")
    return values


# Access control
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _auth_enable(reader: _Reader) -> bool:
    """AUTH_ENABLE and its spelling AUTH_ENABLED mean the same; set both, they must agree."""
    values = {name: reader.boolean(name, False) for name in ("AUTH_ENABLE", "AUTH_ENABLED") if reader.text(name)}
    if len(set(values.values())) > 1:
        reader.errors.append("AUTH_ENABLE and AUTH_ENABLED disagree: set one of them")
    return any(values.values())


def _auth_problems(settings: Settings) -> list[str]:
    problems = []
    if settings.auth_enable and not (settings.auth_keys_file or settings.auth_oidc_issuer):
        problems.append("AUTH_ENABLE needs AUTH_KEYS_FILE or AUTH_OIDC_ISSUER (or both): nobody could sign in")
    if settings.auth_oidc_issuer and not settings.auth_oidc_client_id:
        problems.append("AUTH_OIDC_ISSUER needs AUTH_OIDC_CLIENT_ID (the audience tokens must carry)")
    issuer = urlsplit(settings.auth_oidc_issuer or "")
    # Plain http only towards this host (tests, a sidecar issuer): elsewhere the signing keys could be swapped.
    if settings.auth_oidc_issuer and not (
        issuer.scheme == "https" or (issuer.scheme == "http" and issuer.hostname in _LOOPBACK)
    ):
        problems.append("AUTH_OIDC_ISSUER must be an https:// URL (http:// only for localhost)")
    if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        problems.append("REDIS_URL must start with redis://, rediss:// or unix://")
    return problems


class _Reader:
    """Typed access to an env mapping that collects every error instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text(self, name: str) -> str | None:
        return self._raw(name)

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        self.errors.append(f"{name}: {raw!r} is not a boolean (true/false)")
        return default

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.errors.append(f"{name}: {raw!r} is not an integer")
            return default
        if value < minimum:
            self.errors.append(f"{name}: {value} is below the minimum {minimum}")
            return default
        return value

    def port(self, name: str, default: int) -> int:
        value = self.integer(name, default)
        if not 0 <= value <= 65535:
            self.errors.append(f"{name}: {value} is not a TCP port")
            return default
        return value

    def duration(self, name: str, default: float, *, allow_zero: bool = False) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = parse_duration(raw)
        except ValueError as exc:
            self.errors.append(f"{name}: {exc}")
            return default
        if value < 0 or (value == 0 and not allow_zero):
            self.errors.append(f"{name}: must be {'zero or more' if allow_zero else 'above zero'}")
            return default
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw not in allowed:
            self.errors.append(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
            return default
        return raw
