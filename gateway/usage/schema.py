"""The store's schema as numbered migrations, the same tables in SQLite and PostgreSQL. A store records each
version it applied in `usage_migrations`; start-up applies the missing ones in order (stores serialize this:
SQLite's write lock, PostgreSQL's advisory lock). A migration is never edited once released: add the next one."""

from __future__ import annotations

from typing import Literal, NamedTuple

Dialect = Literal["sqlite", "postgresql"]


class Migration(NamedTuple):
    version: int
    what: str
    statements: tuple[str, ...]  # with {id}, {real} and {bool} standing for the dialect's types


_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "bool": "INTEGER"},
    "postgresql": {
        "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "real": "DOUBLE PRECISION",
        "bool": "BOOLEAN",
    },
}

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "one row per request",
        (
            """CREATE TABLE usage_requests (
                id {id},
                request_id TEXT NOT NULL,
                ts {real} NOT NULL,
                client TEXT,
                route TEXT NOT NULL,
                operation TEXT NOT NULL,
                provider TEXT,
                model_requested TEXT,
                model TEXT,
                model_group TEXT,
                strategy TEXT,
                status INTEGER NOT NULL,
                error_type TEXT,
                duration_ms {real} NOT NULL,
                ttft_ms {real},
                input_tokens INTEGER,
                output_tokens INTEGER,
                cost {real},
                stream {bool} NOT NULL,
                retries INTEGER NOT NULL,
                fallbacks INTEGER NOT NULL,
                metadata TEXT,
                end_user TEXT
            )""",
            # Every query has a time range; a client's own usage is read by client first.
            "CREATE INDEX usage_requests_ts ON usage_requests (ts)",
            "CREATE INDEX usage_requests_client_ts ON usage_requests (client, ts)",
            "CREATE INDEX usage_requests_request_id ON usage_requests (request_id)",
        ),
    ),
    Migration(
        2,
        "cached input tokens, and the opt-in bodies",
        (
            "ALTER TABLE usage_requests ADD COLUMN cached_tokens INTEGER",
            "ALTER TABLE usage_requests ADD COLUMN request_body TEXT",
            "ALTER TABLE usage_requests ADD COLUMN response_body TEXT",
        ),
    ),
    Migration(
        3,
        "one row per MCP tool call the gateway ran (never its arguments)",
        (
            """CREATE TABLE usage_tool_calls (
                id {id},
                request_id TEXT NOT NULL,
                ts {real} NOT NULL,
                server TEXT NOT NULL,
                tool TEXT NOT NULL,
                outcome TEXT NOT NULL,
                duration_ms {real} NOT NULL
            )""",
            # Read by request id (a request's record); deleted by time (retention).
            "CREATE INDEX usage_tool_calls_request_id ON usage_tool_calls (request_id)",
            "CREATE INDEX usage_tool_calls_ts ON usage_tool_calls (ts)",
        ),
    ),
    Migration(
        4,
        "the Inference API's provider registry and synced model lists",
        (
            # A provider registered through /api/v1/inference/providers: a YAML kind (`type`) under a name of its
            # own, with the NAME of the variable holding its key (never a key), and optional overrides.
            """CREATE TABLE inference_providers (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                type TEXT NOT NULL,
                default_model TEXT,
                env_var TEXT NOT NULL,
                url TEXT,
                endpoints TEXT,
                created {real} NOT NULL,
                updated {real} NOT NULL
            )""",
            # A provider's model list as /models/sync last fetched it; a sync replaces the provider's rows.
            """CREATE TABLE inference_models (
                provider TEXT NOT NULL,
                model TEXT NOT NULL,
                owned_by TEXT,
                created INTEGER NOT NULL,
                synced_at {real} NOT NULL,
                PRIMARY KEY (provider, model)
            )""",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version

VERSIONS_TABLE = "CREATE TABLE IF NOT EXISTS usage_migrations (version INTEGER PRIMARY KEY, applied_at {real} NOT NULL)"


def statements(migration: Migration, dialect: Dialect) -> list[str]:
    return [s.format(**_TYPES[dialect]) for s in migration.statements]


def versions_table(dialect: Dialect) -> str:
    return VERSIONS_TABLE.format(**_TYPES[dialect])


def pending(applied: int, target: int = LATEST) -> list[Migration]:
    """The migrations above `applied`, up to `target`, in order."""
    return [m for m in MIGRATIONS if applied < m.version <= target]
