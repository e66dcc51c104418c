"""Client API keys: the keys file (policies and SHA-256 hashes of keys, never keys), lookup in constant time,
and making a new key for `python -m gateway keys new NAME`.

A key is `gwk_<id>_<secret>`: a 12-hex-digit id that is not secret (it finds the entry in O(1)) and 32 random bytes.
Such a key has 256 bits of entropy, so a fast hash is enough: no guessing can invert it, and a slow password hash
(bcrypt, argon2) would cost milliseconds on every request for nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from gateway.config.filestamp import FileStamp, stamp
from gateway.errors import ConfigError
from gateway.routing.filters import ModelFilter, Names

KEY_PREFIX = "gwk_"
_KEY_SHAPE = re.compile(r"^gwk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
DEFAULT_POLICY = "default"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ToolRules:
    """Which MCP tools a client may have: all, none (`enabled` false), or those its globs allow, read against the
    gateway's tool names (`files__read_*`, gateway/mcp/catalog.py); `denied` globs are ignored when `allowed` is
    set, as `denied_models` is when `models` is."""

    enabled: bool = True
    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()

    def allows(self, name: str) -> bool:
        if not self.enabled:
            return False
        lowered = name.lower()
        if self.allowed:
            return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in self.allowed)
        return not any(fnmatch.fnmatchcase(lowered, pattern) for pattern in self.denied)

    @classmethod
    def of(cls, enabled: bool = True, allowed: Iterable[str] = (), denied: Iterable[str] = ()) -> ToolRules:
        return cls(enabled, tuple(p.lower() for p in allowed), tuple(p.lower() for p in denied))


ALL_TOOLS = ToolRules()


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """What one client may do. The empty policy (`ClientPolicy()`) allows everything without limits."""

    name: str = "unrestricted"
    providers: tuple[str, ...] = ()  # lower-cased globs; empty means every provider
    # Built without a table (the keys file is read apart from it); `allows` binds it to the request's table.
    models: ModelFilter = field(default_factory=ModelFilter.of)
    inference: bool = True
    proxy: bool = True
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    admin: bool = False  # sees every client's usage (the usage API), not only its own
    mcp: ToolRules = ALL_TOOLS

    def allows_provider(self, provider_id: str) -> bool:
        lowered = provider_id.lower()
        return not self.providers or any(fnmatch.fnmatchcase(lowered, p) for p in self.providers)

    def allows(self, provider_id: str, model: str, names: Names) -> bool:
        """May the client send `model` (the name the provider receives) to `provider_id`? `names` are the provider
        names of the table the request runs on (`ProviderTable.names`): they tell which entries name a provider."""
        return self.allows_provider(provider_id) and self.models.bind(names).allows(provider_id, model)

    @classmethod
    def parse(cls, name: str, entry: Mapping[str, Any]) -> ClientPolicy:
        allowed, denied = entry.get("models", []), entry.get("denied_models", [])
        restricts = bool(allowed or denied)
        return cls(
            name=name,
            providers=tuple(p.lower() for p in entry.get("providers", [])),
            models=ModelFilter.of(allowed, denied),
            inference=entry.get("inference", True),
            # A raw /proxy call can name any model, so a model-restricted policy has no proxy unless it says so.
            proxy=entry.get("proxy", not restricts),
            requests_per_minute=entry.get("requests_per_minute"),
            tokens_per_minute=entry.get("tokens_per_minute"),
            admin=entry.get("admin", False),
            mcp=_tool_rules(entry),
        )


UNRESTRICTED = ClientPolicy()


def _tool_rules(entry: Mapping[str, Any]) -> ToolRules:
    enabled, allowed, denied = entry.get("mcp", True), entry.get("mcp_tools", []), entry.get("denied_mcp_tools", [])
    if enabled and not allowed and not denied:
        return ALL_TOOLS
    return ToolRules.of(enabled, allowed, denied)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    name: str
    digest: bytes  # the raw SHA-256, compared with hmac.compare_digest
    policy: ClientPolicy
    revoked: bool


@dataclass(frozen=True, slots=True)
class KeyStore:
    """The loaded keys file. `source` names it in messages; `stamp` tells a reload whether it changed."""

    by_id: Mapping[str, KeyEntry]
    without_id: tuple[KeyEntry, ...]  # keys of another format: compared one by one, each in constant time
    policies: Mapping[str, ClientPolicy]
    source: str = "<keys>"
    stamp: FileStamp | None = None

    @property
    def default_policy(self) -> ClientPolicy:
        return self.policies.get(DEFAULT_POLICY, UNRESTRICTED)

    def find(self, key: str) -> KeyEntry | None:
        """The entry whose hash matches `key`, revoked or not; None when no entry matches."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        shaped = _KEY_SHAPE.match(key)
        if shaped is not None:
            entry = self.by_id.get(shaped.group(1))
            if entry is not None and hmac.compare_digest(entry.digest, digest):
                return entry
        found = None
        for entry in self.without_id:
            # No early exit: the time taken does not depend on which entry matched.
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return found

    def __len__(self) -> int:
        return len(self.by_id) + len(self.without_id)


EMPTY_STORE = KeyStore({}, (), {})


def load_schema() -> dict[str, Any]:
    text = resources.files("gateway.config").joinpath("schemas/keys.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_keys(path: str | Path) -> KeyStore:
    """Read and validate a keys file; raise ConfigError listing every problem (never echoing a hash)."""
    source = str(path)
    try:
        version = stamp(str(path))
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    store = parse_keys(text, source)
    return KeyStore(store.by_id, store.without_id, store.policies, source, version)


def parse_keys(text: str, source: str = "<keys>") -> KeyStore:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(source, ["not valid YAML"]) from None
    if document is None:
        document = {}
    validator = jsonschema.Draft202012Validator(load_schema())
    problems = [
        # The offending value is left out of the message: it may be a hash, or a key pasted by mistake.
        f"{_json_path(error.absolute_path)}: {_describe(error)}"
        for error in sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    ]
    if problems:
        raise ConfigError(source, problems)
    policies = {name: ClientPolicy.parse(name, entry) for name, entry in document.get("policies", {}).items()}
    by_id: dict[str, KeyEntry] = {}
    without_id: list[KeyEntry] = []
    names: set[str] = set()
    digests: set[str] = set()
    for index, item in enumerate(document.get("keys", [])):
        where = f"keys[{index}]"
        name, policy_name = item["name"], item.get("policy")
        if name in names:
            problems.append(f"{where}: the name {name!r} is used twice")
        if item["sha256"] in digests:
            problems.append(f"{where}: the same key hash appears twice")
        names.add(name)
        digests.add(item["sha256"])
        if policy_name is not None and policy_name not in policies:
            problems.append(f"{where}: unknown policy {policy_name!r}")
            continue
        policy = policies[policy_name] if policy_name else policies.get(DEFAULT_POLICY, UNRESTRICTED)
        if item.get("admin", False) and not policy.admin:
            # An admin key: its policy's limits, with the right to see everyone's usage.
            policy = replace(policy, admin=True)
        entry = KeyEntry(name, bytes.fromhex(item["sha256"]), policy, item.get("revoked", False))
        key_id = item.get("id")
        if key_id is None:
            without_id.append(entry)
        elif key_id in by_id:
            problems.append(f"{where}: the id {key_id!r} is used twice")
        else:
            by_id[key_id] = entry
    if problems:
        raise ConfigError(source, problems)
    return KeyStore(by_id, tuple(without_id), policies, source)


def _json_path(path: Iterable[Any]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "pattern":
        return f"does not match {error.validator_value}"
    if error.validator == "additionalProperties":
        return error.message
    if error.validator == "required":
        return error.message
    return f"fails {error.validator} {error.validator_value!r}" if error.validator != "type" else error.message


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str
    key_id: str
    sha256: str

    def entry_line(self, name: str, policy: str | None = None) -> str:
        fields = f'name: {name}, id: "{self.key_id}", sha256: "{self.sha256}"'
        if policy:
            fields += f", policy: {policy}"
        return f"  - {{{fields}}}"


def new_key() -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = f"{KEY_PREFIX}{key_id}_{secret}"
    return NewKey(key, key_id, hash_key(key))


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def cli(argv: list[str]) -> int:
    """`keys new NAME [--policy P]` prints a new key once and its keys-file line; `keys check FILE` validates."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="gateway keys", description="client API keys")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("new", help="make a key: print it once, with the line for the keys file")
    make.add_argument("name", help="the client's name, shown in logs and metrics")
    make.add_argument("--policy", help="a policy defined in the keys file")
    check = commands.add_parser("check", help="validate a keys file")
    check.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "check":
        try:
            store = load_keys(args.file)
        except ConfigError as exc:
            print(exc.render(), file=sys.stderr)
            return 2
        print(f"{args.file}: {len(store)} keys, {len(store.policies)} policies")
        return 0
    for value in (args.name, args.policy):
        if value is not None and not _NAME.match(value):
            parser.error(f"{value!r}: use letters, digits and . _ @ - (up to 64)")
    made = new_key()
    print(f"key for {args.name} (shown only now; give it to the client, it is not stored anywhere):")
    print(f"  {made.key}")
    print("add this line under `keys:` in the keys file (AUTH_KEYS_FILE):")
    print(made.entry_line(args.name, args.policy))
    return 0
