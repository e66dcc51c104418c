"""The provider table: a YAML (or OpenAPI) file plus the environment -> validated, frozen Provider entries, and the
model groups that name several providers for one model.

Everything a request needs from the table (endpoint URLs, auth headers, name, group and prefix lookups) is computed
here, once, so the hot path does dictionary lookups only.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml
from yarl import URL

from gateway.config.capabilities import Catalog, catalog, is_exact
from gateway.config.settings import parse_duration
from gateway.errors import ConfigError

AuthType = Literal["bearer", "xheader", "query", "none"]

_MEMO_ENTRIES = 4096
_MEMO_KEY_MAX = 256
OPENAPI_TABLE_PATH = ("components", "schemas", "Provider", "x-provider-configs")
_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")


def env_prefix(provider_id: str) -> str:
    """`ollama_cloud` -> `OLLAMA_CLOUD`: the prefix of a provider's environment variables."""
    return re.sub(r"[^A-Z0-9]", "_", provider_id.upper())


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One operation a provider serves (`chat`, `models`, `embeddings`, ...): the spec's name, method and path, and
    the full URL (base URL, path and the auth query), made at load; empty while the provider is unavailable."""

    name: str
    method: str
    path: str
    url: URL = field(default=URL(), repr=False)


@dataclass(frozen=True, slots=True)
class ListShape:
    """Where a list-models answer keeps its models; the defaults are OpenAI's shape."""

    items: tuple[str, ...] = ("data",)
    id: str = "id"
    created: str | None = "created"
    owned_by: str | None = "owned_by"
    strip_id_prefix: str = ""


@dataclass(frozen=True, slots=True)
class TimeoutOverrides:
    """The table's `timeouts:` block: seconds that replace the CLIENT_* settings for one provider (None = keep)."""

    connect: float | None = None
    response_header: float | None = None
    total: float | None = None
    stream_idle: float | None = None


@dataclass(frozen=True, slots=True)
class RetryOverrides:
    """The table's `retries:` block: replaces the CLIENT_*RETR* settings for one provider (None = keep)."""

    max_retries: int | None = None
    backoff: float | None = None
    backoff_max: float | None = None
    retry_after_max: float | None = None


@dataclass(frozen=True, slots=True)
class Price:
    """What a model costs, in dollars per million tokens; cached input tokens at their own price when one is set."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(cached_tokens, input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        return ((input_tokens - cached) * self.input + cached * cached_price + output_tokens * self.output) / 1e6


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    url: str
    auth_type: AuthType
    supports_vision: bool
    # Operation name -> endpoint: a provider serves exactly the operations it declares.
    endpoints: Mapping[str, Endpoint]
    aliases: tuple[str, ...] = ()
    model_prefixes: tuple[str, ...] = ()
    list_shape: ListShape = ListShape()
    key_env: str = ""
    # Why the provider is not served (missing key, bad URL), or None when it is.
    unavailable: str | None = None
    # Computed once from the entry and the environment; the key itself is never printed.
    base_url: URL = field(default=URL(), repr=False)
    # The provider's own headers (the table's and its key's) as (name, value) bytes, and their lower-cased names (a
    # client's header of the same name is replaced), made once here rather than on every request.
    headers: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)
    header_names: frozenset[bytes] = field(default=frozenset(), repr=False)
    # Client headers (lower-cased names) this provider also receives: on inference routes beyond the allow-list,
    # on /proxy among the identity headers that are otherwise dropped. Never credentials.
    forward_headers: frozenset[bytes] = frozenset()
    query: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # Lower-cased header and query names that carry the key: a client may never set them.
    secret_header: str | None = None
    secret_query: str | None = None
    # Ask for usage in streams; model names known for metric labels.
    stream_usage: bool = False
    # Chat messages without content are dropped before the request is forwarded (the table may turn it off).
    drop_empty_messages: bool = True
    known_models: tuple[str, ...] = ()
    # What its models are (service type, modalities, features, context window), by name or pattern.
    catalog: Catalog = Catalog()
    timeouts: TimeoutOverrides = TimeoutOverrides()
    retries: RetryOverrides = RetryOverrides()
    prices: Mapping[str, Price] = field(default_factory=dict)  # model name the provider receives -> its price

    @property
    def served(self) -> bool:
        return self.unavailable is None


@dataclass(frozen=True, slots=True)
class Deployment:
    """One provider serving a model group's model, under the name that provider knows it by. Prices are per
    million tokens; weight and prices are read by routing strategies."""

    provider: str  # a provider id (aliases are resolved at load)
    model: str
    weight: float = 1.0
    input_price: float | None = None
    output_price: float | None = None
    cached_input_price: float | None = None


# What a group's `strategy` may say besides strategy tags, and the tags themselves in their canonical order.
GROUP_ORDERS = ("fallback", "weighted")
STRATEGY_TAGS = ("price", "latency", "tokenrate")


@dataclass(frozen=True, slots=True)
class ModelGroup:
    """A public model name and the deployments that serve it, in the table's order of preference, with how a request
    that carries no strategy tag picks among them (`strategy`: `fallback`, `weighted`, or tags joined with `+` in
    STRATEGY_TAGS' order), the share of measured-strategy traffic sent to unmeasured deployments, and the limits
    of trying one deployment after another (deployments tried, seconds from the first attempt)."""

    name: str
    deployments: tuple[Deployment, ...]
    strategy: str = "fallback"
    explore: float = 0.05
    attempts: int = 3
    budget: float = 30.0


@dataclass(frozen=True, slots=True)
class ProviderTable:
    providers: Mapping[str, Provider]
    source: str = ""
    # id and every alias (lower case) -> provider
    names: Mapping[str, Provider] = field(default_factory=dict)
    # model-name prefix (lower case) -> provider, looked up by length, longest first
    prefixes: Mapping[str, Provider] = field(default_factory=dict)
    prefix_lengths: tuple[int, ...] = ()
    # model group name (lower case) -> group
    groups: Mapping[str, ModelGroup] = field(default_factory=dict)
    # (provider id, model it receives) -> price: the providers' `prices`, then the groups' deployment prices
    price_index: Mapping[tuple[str, str], Price] = field(default_factory=dict)
    # model name -> by_prefix's answer: traffic names a few models, so a table with many prefix lengths costs one
    # lookup per request like a table with one. Bounded in entries and key length; a reload brings a fresh one.
    memo: dict[str, Provider | None] = field(default_factory=dict, repr=False, compare=False)
    # endpoint name -> the largest request body its routes take, replacing SERVER_MAX_REQUEST_BODY_SIZE
    body_limits: Mapping[str, int] = field(default_factory=dict)
    # The file's own entries as validated (id -> entry): the kinds a registered provider takes its URL, auth and
    # endpoints from (config/registry.py). Never read per request.
    entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def lookup(self, name: str) -> Provider | None:
        return self.names.get(name.lower())

    def group(self, model: str) -> ModelGroup | None:
        return self.groups.get(model.lower()) if self.groups else None

    def prices(self, provider_id: str, model: str) -> Price | None:
        """The price of `model` (the name the provider receives) at `provider_id`, or None when the table has none."""
        return self.price_index.get((provider_id, model))

    def by_prefix(self, model: str) -> Provider | None:
        memo = self.memo
        if model in memo:
            return memo[model]
        found = self._scan_prefixes(model)
        if len(model) <= _MEMO_KEY_MAX:
            if len(memo) >= _MEMO_ENTRIES:
                memo.clear()
            memo[model] = found
        return found

    def _scan_prefixes(self, model: str) -> Provider | None:
        lowered = model.lower()
        for length in self.prefix_lengths:
            if len(lowered) >= length:
                hit = self.prefixes.get(lowered[:length])
                if hit is not None:
                    return hit
        return None

    @property
    def served(self) -> list[Provider]:
        return [p for p in self.providers.values() if p.served]


def load_schema() -> dict[str, Any]:
    text = resources.files("gateway.config").joinpath("schemas/providers.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema())


def entry_problems(pid: str, entry: Mapping[str, Any]) -> list[str]:
    """What the schema says of one provider entry under `pid`, worded as a file's problems are (no values that may
    be secrets)."""
    document = {"providers": {pid: entry}}
    return [
        f"{_json_path('', error.absolute_path)}: {_schema_problem(error)}"
        for error in sorted(_validator().iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    ]


def load_table(path: str | Path, env: Mapping[str, str]) -> ProviderTable:
    """Read, validate and resolve a providers file; raise ConfigError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    return parse_table(text, env, source=source)


def parse_table(text: str, env: Mapping[str, str], source: str = "<providers>") -> ProviderTable:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {_yaml_problem(exc)}"]) from None
    document, where = _unwrap_openapi(document, source)
    problems = [
        f"{_json_path(where, error.absolute_path)}: {_schema_problem(error)}"
        for error in sorted(
            jsonschema.Draft202012Validator(load_schema()).iter_errors(document),
            key=lambda e: [str(p) for p in e.absolute_path],
        )
    ]
    if problems:
        raise ConfigError(source, problems)
    entries: dict[str, Any] = document["providers"]
    groups: dict[str, Any] = document.get("models", {})
    problems = _cross_check(entries, where) + _check_groups(groups, entries)
    if problems:
        raise ConfigError(source, problems)
    providers = {pid: build_provider(entry, env) for pid, entry in entries.items()}
    return index_table(providers, source, _groups(groups, entries), document.get("body_limits"), entries)


def index_table(
    providers: Mapping[str, Provider],
    source: str = "",
    groups: Mapping[str, ModelGroup] | None = None,
    body_limits: Mapping[str, int] | None = None,
    entries: Mapping[str, Mapping[str, Any]] | None = None,
) -> ProviderTable:
    names: dict[str, Provider] = {}
    prefixes: dict[str, Provider] = {}
    for provider in providers.values():
        for name in (provider.id, *provider.aliases):
            names[name.lower()] = provider
        for prefix in provider.model_prefixes:
            prefixes[prefix.lower()] = provider
    lengths = tuple(sorted({len(p) for p in prefixes}, reverse=True))
    by_name = {name.lower(): group for name, group in (groups or {}).items()}
    return ProviderTable(
        dict(providers),
        source,
        names,
        prefixes,
        lengths,
        by_name,
        price_index=_price_index(providers, groups),
        body_limits=dict(body_limits or {}),
        entries=dict(entries or {}),
    )


def _price_index(
    providers: Mapping[str, Provider], groups: Mapping[str, ModelGroup] | None
) -> dict[tuple[str, str], Price]:
    index = {(p.id, model): price for p in providers.values() for model, price in p.prices.items()}
    for group in (groups or {}).values():
        for d in group.deployments:
            # A deployment's prices are for its provider and model; its input and output prices come together.
            if d.input_price is not None and d.output_price is not None:
                index[(d.provider, d.model)] = Price(d.input_price, d.output_price, d.cached_input_price)
    return index


def _unwrap_openapi(document: Any, source: str) -> tuple[Any, str]:
    """An OpenAPI document carries the table at components.schemas.Provider.x-provider-configs."""
    if not (isinstance(document, dict) and "openapi" in document):
        return document, ""
    node: Any = document
    for key in OPENAPI_TABLE_PATH:
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(source, [f"an OpenAPI document without {'.'.join(OPENAPI_TABLE_PATH)}"])
        node = node[key]
    return {"providers": node}, ".".join(OPENAPI_TABLE_PATH[:-1])


def _json_path(where: str, parts: Any) -> str:
    path = ".".join(str(p) for p in parts)
    if where and path.startswith("providers"):
        path = "x-provider-configs" + path[len("providers") :]
    path = f"{where}.{path}" if where and path else (path or where)
    return path or "(top level)"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's copy of the offending line: that line may hold a key."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem or 'a syntax error'} at line {mark.line + 1}, column {mark.column + 1}"
    return type(exc).__name__


# Messages that quote names (of the schema, or of the document's keys), never a value: shown as jsonschema words them.
_NAMES_ONLY = frozenset({"required", "additionalProperties", "dependentRequired"})
# Fields whose value may be a credential, or hold one: a URL (user info, query), headers, anything auth- or key-named.
_SECRET_FIELD = re.compile(r"(?i)url|header|auth|key|secret|token|passw|credential|cookie")


def _schema_problem(error: jsonschema.ValidationError) -> str:
    """A schema error as a problem line. jsonschema's own message quotes the offending value, so it is used only
    where that value cannot be a secret; elsewhere the message names the rule and hides the value."""
    if error.validator in _NAMES_ONLY:
        return error.message
    parts = list(error.absolute_path)
    value = error.instance
    if len(parts) == 3 and parts[0] == "providers" and parts[2] == "url" and error.validator == "pattern":
        shown = _shown_url(value)
        if shown is not None:
            return f"{shown} does not match {error.validator_value!r}"
    if _secret_bearing(parts):
        return f"{_rule(error)} (value hidden)"
    if isinstance(value, dict | list):
        return _rule(error)  # jsonschema would quote the whole mapping or list
    return error.message


def _secret_bearing(parts: list[Any]) -> bool:
    """The document, the table or a whole provider entry (each holds URLs and headers), or a secret-named field."""
    if len(parts) <= 2 and (not parts or parts[0] == "providers"):
        return True
    return any(isinstance(part, str) and _SECRET_FIELD.search(part) for part in parts)


def _shown_url(value: Any) -> str | None:
    """A bad URL as it may be shown (quoted, through `_safe_url`), or None when it does not read as a URL at all (a
    key pasted in its place) or still shows an `@` (user info that did not parse as such)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = URL(value)
    except ValueError:
        return None
    shown = _safe_url(value)
    if not (parsed.scheme and parsed.host) or "@" in shown:
        return None
    return f"{shown!r} (user info hidden)" if parsed.raw_user or parsed.raw_password else repr(shown)


_RULES = {
    "type": "is not of type {!r}",
    "enum": "is not one of {!r}",
    "const": "is not {!r}",
    "pattern": "does not match {}",
    "minLength": "has fewer than {} characters",
    "maxLength": "has more than {} characters",
    "minimum": "is less than {}",
    "exclusiveMinimum": "is not greater than {}",
    "maximum": "is greater than {}",
    "exclusiveMaximum": "is not less than {}",
    "minItems": "has fewer than {} items",
    "maxItems": "has more than {} items",
    "uniqueItems": "has repeated items",
    "minProperties": "has fewer than {} entries",
    "maxProperties": "has more than {} entries",
    "anyOf": "matches none of the allowed forms",
    "oneOf": "matches none, or more than one, of the allowed forms",
}


def _rule(error: jsonschema.ValidationError) -> str:
    """The rule an error broke, worded without the offending value."""
    subject = "a name" if "propertyNames" in error.schema_path else "the value"
    rule = _RULES.get(str(error.validator))
    if error.validator in ("minLength", "minItems", "minProperties") and error.validator_value == 1:
        rule = "is empty"
    if rule is None:
        return f"{subject} fails {error.validator} {error.validator_value!r}"
    return f"{subject} {rule.format(error.validator_value)}"


def _cross_check(entries: dict[str, Any], where: str) -> list[str]:
    """What a schema cannot say: ids match their keys, and names and prefixes are unambiguous."""
    problems: list[str] = []
    owner_of_name: dict[str, str] = {}
    owner_of_prefix: dict[str, str] = {}
    for pid, entry in entries.items():
        base = _json_path(where, ["providers", pid])
        if entry["id"] != pid:
            problems.append(f"{base}.id: {entry['id']!r} differs from its key {pid!r}")
        for name in (pid, *entry.get("aliases", [])):
            other = owner_of_name.setdefault(name.lower(), pid)
            if other != pid:
                problems.append(f"{base}.aliases: {name!r} is already a name of provider {other!r}")
        for prefix in entry.get("model_prefixes", []):
            other = owner_of_prefix.setdefault(prefix.lower(), pid)
            if other != pid:
                problems.append(f"{base}.model_prefixes: {prefix!r} is already a prefix of {other!r}")
        shape = entry.get("models_list", {})
        if shape.get("items", "data").strip(".") != shape.get("items", "data"):
            problems.append(f"{base}.models_list.items: a dotted path may not start or end with '.'")
    return problems


def _names(entries: dict[str, Any]) -> dict[str, str]:
    """Every provider name (id and aliases, lower case) -> its id."""
    names: dict[str, str] = {}
    for pid, entry in entries.items():
        for name in (pid, *entry.get("aliases", [])):
            names.setdefault(name.lower(), pid)
    return names


def _check_groups(groups: dict[str, Any], entries: dict[str, Any]) -> list[str]:
    """Model groups name providers of this table, at most once per model, and cannot be read as `provider/model`."""
    problems: list[str] = []
    names = _names(entries)
    seen: dict[str, str] = {}
    for name, group in groups.items():
        base = f"models.{name}"
        other = seen.setdefault(name.lower(), name)
        if other != name:
            problems.append(f"{base}: the same name as model group {other!r} (names are compared in lower case)")
        head, slash, _ = name.partition("/")
        if slash and head.lower() in names:
            problems.append(f"{base}: reads as a `provider/model` id of provider {names[head.lower()]!r}")
        pairs: set[tuple[str, str]] = set()
        for i, deployment in enumerate(group["deployments"]):
            pid = names.get(deployment["provider"].lower())
            if pid is None:
                problems.append(f"{base}.deployments.{i}.provider: no provider {deployment['provider']!r} in the table")
                continue
            if (pid, deployment["model"]) in pairs:
                problems.append(f"{base}.deployments.{i}: provider {pid!r} with model {deployment['model']!r} twice")
            pairs.add((pid, deployment["model"]))
        strategy = group.get("strategy", "fallback")
        tags = strategy.split("+")
        if len(set(tags)) != len(tags):
            problems.append(f"{base}.strategy: {strategy!r} names a tag twice")
        if strategy == "weighted" and not any(d.get("weight", 1.0) > 0 for d in group["deployments"]):
            problems.append(f"{base}.strategy: `weighted` needs a deployment whose weight is above 0")
    return problems


def _groups(groups: dict[str, Any], entries: dict[str, Any]) -> dict[str, ModelGroup]:
    names = _names(entries)
    return {
        name: ModelGroup(
            name,
            tuple(
                Deployment(
                    provider=names[d["provider"].lower()],
                    model=d["model"],
                    weight=float(d.get("weight", 1.0)),
                    input_price=d.get("input_price"),
                    output_price=d.get("output_price"),
                    cached_input_price=d.get("cached_input_price"),
                )
                for d in group["deployments"]
            ),
            strategy=_canonical_strategy(group.get("strategy", "fallback")),
            explore=float(group.get("explore", 0.05)),
            attempts=int(group.get("attempts", 3)),
            budget=_seconds(group.get("budget")) or 30.0,
        )
        for name, group in groups.items()
    }


def _canonical_strategy(strategy: str) -> str:
    """`latency+price` -> `price+latency`: tags in one order, so the record and the metrics name a strategy once."""
    if strategy in GROUP_ORDERS:
        return strategy
    tags = set(strategy.split("+"))
    return "+".join(tag for tag in STRATEGY_TAGS if tag in tags)


# Headers the gateway sets on each request itself (outbound.upstream_headers); a table's own value is not sent.
_PER_REQUEST = frozenset({"accept-encoding", "x-request-id"})


def build_provider(entry: dict[str, Any], env: Mapping[str, str]) -> Provider:
    pid: str = entry["id"]
    prefix = env_prefix(pid)
    url_env = f"{prefix}_API_URL"
    key_env: str = entry.get("api_key_env") or f"{prefix}_API_KEY"
    auth_type: AuthType = entry["auth_type"]
    unavailable: str | None = None

    url: str = (env.get(url_env) or "").strip() or entry["url"]
    missing = [f"{prefix}_{name.upper()}" for name in _PLACEHOLDER.findall(url)]
    missing = [name for name in missing if not env.get(name)]
    if missing:
        unavailable = f"its URL needs {', '.join(missing)}"
    else:
        url = _PLACEHOLDER.sub(lambda m: env[f"{prefix}_{m.group(1).upper()}"].strip(), url)
    base = URL(url) if not missing else URL()
    if not missing and (base.scheme not in ("http", "https") or not base.host or base.query_string):
        unavailable = f"bad URL {_safe_url(url)!r} (from {url_env if env.get(url_env) else 'the table'})"

    key = (env.get(key_env) or "").strip()
    if auth_type != "none" and unavailable is None:
        if not key:
            unavailable = f"missing API key: set {key_env}"
        elif not key.isprintable():
            unavailable = f"{key_env} holds control characters"

    headers = [(name, value) for name, value in entry.get("headers", {}).items()]
    query: list[tuple[str, str]] = []
    secret_header: str | None = None
    secret_query: str | None = None
    if auth_type == "bearer":
        secret_header = "authorization"
        headers.append(("Authorization", f"Bearer {key}"))
    elif auth_type == "xheader":
        secret_header = entry.get("auth_header", "x-api-key")
        headers.append((str(secret_header), key))
    elif auth_type == "query":
        secret_query = entry.get("auth_query", "key")
        query.append((str(secret_query), key))

    ready = unavailable is None
    base_str = str(base).rstrip("/")
    endpoints = {
        operation: _endpoint(spec, base_str, query if ready else None) for operation, spec in entry["endpoints"].items()
    }
    shape = entry.get("models_list", {})
    return Provider(
        id=pid,
        url=_safe_url(url),
        auth_type=auth_type,
        supports_vision=bool(entry.get("supports_vision", False)),
        endpoints=endpoints,
        aliases=tuple(entry.get("aliases", ())),
        model_prefixes=tuple(entry.get("model_prefixes", ())),
        list_shape=ListShape(
            items=tuple(str(shape.get("items", "data")).split(".")),
            id=shape.get("id", "id"),
            created=shape.get("created", "created"),
            owned_by=shape.get("owned_by", "owned_by"),
            strip_id_prefix=shape.get("strip_id_prefix", ""),
        ),
        key_env=key_env,
        unavailable=unavailable,
        base_url=URL(base_str) if ready else URL(),
        headers=_header_pairs(headers) if ready else (),
        header_names=frozenset(name.lower().encode() for name, _ in headers) if ready else frozenset(),
        query=tuple(query) if ready else (),
        secret_header=secret_header.lower() if secret_header else None,
        secret_query=secret_query,
        stream_usage=bool(entry.get("stream_usage", False)),
        drop_empty_messages=bool(entry.get("drop_empty_messages", True)),
        forward_headers=frozenset(name.lower().encode() for name in entry.get("forward_headers", ())),
        known_models=tuple(
            name
            for name in (item if isinstance(item, str) else item["id"] for item in entry.get("models", ()))
            if is_exact(name)
        ),
        catalog=catalog(entry.get("models", ()), entry["endpoints"]),
        timeouts=TimeoutOverrides(**{name: _seconds(value) for name, value in entry.get("timeouts", {}).items()}),
        retries=_retry_overrides(entry.get("retries", {})),
        prices={
            model: Price(float(p["input"]), float(p["output"]), _number(p.get("cached_input")))
            for model, p in entry.get("prices", {}).items()
        },
    )


def _number(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def _retry_overrides(block: dict[str, Any]) -> RetryOverrides:
    return RetryOverrides(
        max_retries=block.get("max_retries"),
        backoff=_seconds(block.get("backoff")),
        backoff_max=_seconds(block.get("backoff_max")),
        retry_after_max=_seconds(block.get("retry_after_max")),
    )


def _header_pairs(headers: list[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple(
        (name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
        for name, value in headers
        if name.lower() not in _PER_REQUEST
    )


def _seconds(value: float | str | None) -> float | None:
    """A schema-checked duration: seconds as a number, or Go-style text such as `90s` or `2m`."""
    if value is None:
        return None
    return float(value) if isinstance(value, int | float) else parse_duration(value)


def _endpoint(entry: dict[str, str], base: str, query: list[tuple[str, str]] | None) -> Endpoint:
    """`query` is None while the provider is unavailable: then the endpoint has no URL."""
    url = URL() if query is None else _with_query(URL(base + entry["endpoint"]), query)
    return Endpoint(name=entry["name"], method=entry["method"], path=entry["endpoint"], url=url)


def _with_query(url: URL, query: list[tuple[str, str]]) -> URL:
    return url.update_query(query) if query else url


def _safe_url(url: str) -> str:
    """A URL as it may be shown: user info and query dropped, so a credential in it is never printed."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<unparsable>"
    if parsed.query_string:
        parsed = parsed.with_query(None)
        return f"{parsed.with_user(None) if parsed.user or parsed.password else parsed}?<query hidden>"
    return str(parsed.with_user(None)) if parsed.user or parsed.password else url
