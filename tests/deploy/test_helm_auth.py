"""The chart's access-control values: the client keys Secret mounted so rotations reach a running gateway,
OIDC settings, Redis for shared rate limits (a password only ever through a Secret) and the egress they need."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from aiohttp.test_utils import TestServer

from gateway.access.auth import ACCESS, reload_keys
from gateway.config.settings import Settings
from tests.fakes.access import write_keys
from tests.fakes.gateways import gateway_app
from tests.fakes.providers import access_provider
from tests.fakes.tables import access_table

from .chart import RELEASE, render

KEYS_SECRET = "gateway-client-keys"
AUTH_KEYS: dict[str, Any] = {"auth": {"enabled": True, "keys": {"existingSecret": KEYS_SECRET}}}
OIDC: dict[str, Any] = {
    "auth": {
        "enabled": True,
        "oidc": {
            "issuer": "https://login.example.com/realms/ai",
            "clientId": "llm-gateway",
            "clientSecret": {"existingSecret": "gateway-oidc", "existingSecretKey": "secret"},
            "policyClaim": "groups",
            "nameClaim": "preferred_username",
            "leeway": "45s",
        },
    }
}
REDIS_SECRET: dict[str, Any] = {"rateLimit": {"redis": {"existingSecret": "gateway-redis"}}}
RESTRICTED = {"networkPolicy": {"enabled": True, "restrictEgress": True}}


def by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in entries}


def env_of(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return by_name(render(values).container.get("env", []))


def egress(values: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = render({**values, **RESTRICTED}).one("NetworkPolicy")["spec"]["egress"]
    return rules


def egress_ports(values: dict[str, Any]) -> list[int]:
    return [port["port"] for rule in egress(values) for port in rule["ports"]]


# --- client keys ------------------------------------------------------------------------------------------------


def test_keys_secret_is_mounted_as_a_read_only_directory() -> None:
    rendered = render(AUTH_KEYS)
    mount = by_name(rendered.container["volumeMounts"])["auth-keys"]
    volume = by_name(rendered.pod["spec"]["volumes"])["auth-keys"]
    # Kubernetes never updates a subPath mount: a rotated key would not reach the pod.
    assert mount == {"name": "auth-keys", "mountPath": "/etc/llm-gateway/keys", "readOnly": True}
    assert volume["secret"] == {
        "secretName": KEYS_SECRET,
        "defaultMode": 0o440,
        "items": [{"key": "keys.yaml", "path": "keys.yaml"}],
    }
    assert rendered.settings["AUTH_ENABLE"] == "true"
    assert rendered.settings["AUTH_KEYS_FILE"] == "/etc/llm-gateway/keys/keys.yaml"
    assert rendered.settings["AUTH_KEYS_RELOAD_INTERVAL"] == "10s"


def test_keys_file_is_readable_by_the_gateways_user_and_nobody_else() -> None:
    """The kubelet makes a Secret volume's files root-owned, group fsGroup, mode defaultMode."""
    rendered = render(AUTH_KEYS)
    mode = by_name(rendered.pod["spec"]["volumes"])["auth-keys"]["secret"]["defaultMode"]
    pod_context, context = rendered.pod["spec"]["securityContext"], rendered.container["securityContext"]
    uid = context.get("runAsUser", pod_context["runAsUser"])
    groups = {context.get("runAsGroup", pod_context["runAsGroup"]), pod_context["fsGroup"]}
    assert uid == 10001 and uid != 0  # not the owner: it reads through the group
    assert pod_context["fsGroup"] in groups and mode & 0o040
    assert mode & 0o007 == 0 and mode & 0o222 == 0


def test_keys_secret_needs_a_pod_fs_group() -> None:
    with pytest.raises(
        helm.HelmRenderError, match=re.escape("auth.keys.existingSecret needs podSecurityContext.fsGroup")
    ):
        render({**AUTH_KEYS, "podSecurityContext": {"fsGroup": None}})


def test_keys_secret_rotation_rolls_no_pods() -> None:
    """The gateway re-reads the file in place: no checksum annotation for the Secret, and the settings are equal."""
    one = render(AUTH_KEYS).pod["metadata"]["annotations"]
    two = render({"auth": {"enabled": True, "keys": {"existingSecret": KEYS_SECRET + "-v2"}}}).pod["metadata"]
    assert set(one) == set(render().pod["metadata"]["annotations"])
    assert one["checksum/settings"] == two["annotations"]["checksum/settings"]


def kubelet_secret_volume(directory: Path, files: dict[str, str], version: int) -> None:
    """Lay out (or update) a Secret volume the way the kubelet's atomic writer does: the files in a timestamped
    directory, `..data` pointing at it (swapped with one rename), and each file a symlink through `..data`."""
    directory.mkdir(exist_ok=True)
    target = directory / f"..2026_11_22_00_00_0{version}.000000001"
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text, "utf-8")
    (directory / "..data_tmp").symlink_to(target.name)
    os.replace(directory / "..data_tmp", directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


async def test_a_gateway_on_the_charts_settings_takes_a_rotated_keys_secret(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    rendered = render(AUTH_KEYS)
    mount_path = by_name(rendered.container["volumeMounts"])["auth-keys"]["mountPath"]
    (item,) = by_name(rendered.pod["spec"]["volumes"])["auth-keys"]["secret"]["items"]
    volume = tmp_path / "volume"
    # The container's environment: the settings ConfigMap, with the mount's place moved here.
    env = {**rendered.settings, "AUTH_KEYS_FILE": rendered.settings["AUTH_KEYS_FILE"].replace(mount_path, str(volume))}
    settings = Settings.from_env(env)
    assert (settings.auth_enable, settings.auth_keys_file) == (True, str(volume / item["path"]))

    versions = tmp_path / "versions"
    versions.mkdir()
    old = write_keys(versions, {"ci-bot": {}, "laptop": {}}, name="v1.yaml")
    kubelet_secret_volume(volume, {item["path"]: old.path.read_text("utf-8")}, 1)
    upstream = await access_provider().start(aiohttp_server)
    assert isinstance(upstream.server, TestServer)
    gateway = await aiohttp_client(gateway_app(replace(settings, telemetry_enable=False), access_table(upstream.url)))

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    assert (await gateway.get("/v1/models")).status == 401
    assert (await gateway.get("/v1/models", headers=bearer(old.key("laptop")))).status == 200

    # The operator updates the Secret: the laptop's key is revoked, a new one added.
    new = write_keys(versions, {"ci-bot": {}, "laptop": {"revoked": True}, "new-laptop": {}}, name="v2.yaml")
    kubelet_secret_volume(volume, {item["path"]: new.path.read_text("utf-8")}, 2)
    assert await reload_keys(gateway.app[ACCESS])
    assert (await gateway.get("/v1/models", headers=bearer(old.key("laptop")))).status == 401
    assert (await gateway.get("/v1/models", headers=bearer(new.key("new-laptop")))).status == 200


def test_auth_without_a_way_to_sign_in_is_refused() -> None:
    with pytest.raises(helm.HelmRenderError, match="auth.enabled needs auth.keys.existingSecret or auth.oidc.issuer"):
        render({"auth": {"enabled": True}})


def test_auth_off_by_default_with_the_gateways_defaults() -> None:
    rendered = render()
    assert rendered.settings["AUTH_ENABLE"] == "false"
    assert rendered.settings["AUTH_KEYS_FILE"] == ""
    assert "auth-keys" not in by_name(rendered.pod["spec"]["volumes"])
    assert "REDIS_URL" not in rendered.settings


# --- OIDC -------------------------------------------------------------------------------------------------------


def test_oidc_values_become_the_gateways_settings() -> None:
    rendered = render(OIDC)
    assert {name: value for name, value in rendered.settings.items() if name.startswith("AUTH_")} == {
        "AUTH_ENABLE": "true",
        "AUTH_KEYS_FILE": "",
        "AUTH_KEYS_RELOAD_INTERVAL": "10s",
        "AUTH_OIDC_ISSUER": "https://login.example.com/realms/ai",
        "AUTH_OIDC_CLIENT_ID": "llm-gateway",
        "AUTH_OIDC_POLICY_CLAIM": "groups",
        "AUTH_OIDC_NAME_CLAIM": "preferred_username",
        "AUTH_OIDC_LEEWAY": "45s",
    }
    settings = Settings.from_env(rendered.settings)
    assert (settings.auth_oidc_issuer, settings.auth_oidc_client_id) == (
        "https://login.example.com/realms/ai",
        "llm-gateway",
    )
    assert (settings.auth_oidc_policy_claim, settings.auth_oidc_name_claim, settings.auth_oidc_leeway) == (
        "groups",
        "preferred_username",
        45.0,
    )
    assert env_of(OIDC)["AUTH_OIDC_CLIENT_SECRET"] == {
        "name": "AUTH_OIDC_CLIENT_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "gateway-oidc", "key": "secret"}},
    }


def test_oidc_issuer_needs_a_client_id() -> None:
    values = {"auth": {"enabled": True, "oidc": {"issuer": "https://login.example.com"}}}
    with pytest.raises(helm.HelmRenderError, match=re.escape("auth.oidc.issuer needs auth.oidc.clientId")):
        render(values)


@pytest.mark.parametrize("issuer", ["http://login.example.com", "login.example.com", "https://"])
def test_oidc_issuer_must_be_https(issuer: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape("at '/auth/oidc/issuer'")):
        render({"auth": {"oidc": {"issuer": issuer, "clientId": "x"}}})


def test_a_loopback_http_issuer_is_accepted_as_by_the_gateway() -> None:
    rendered = render({"auth": {"oidc": {"issuer": "http://127.0.0.1:8081/realms/ai", "clientId": "x"}}})
    assert Settings.from_env(rendered.settings).auth_oidc_issuer == "http://127.0.0.1:8081/realms/ai"


# --- Redis ------------------------------------------------------------------------------------------------------


def test_redis_url_from_a_secret_is_only_a_secret_key_ref() -> None:
    rendered = render(REDIS_SECRET)
    assert by_name(rendered.container["env"])["REDIS_URL"] == {
        "name": "REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "gateway-redis", "key": "redis-url"}},
    }
    for config_map in rendered.all("ConfigMap"):
        assert "REDIS_URL" not in config_map["data"]
    assert (rendered.settings["RATELIMIT_REDIS_FAILURE"], rendered.settings["REDIS_TIMEOUT"]) == ("open", "250ms")
    assert rendered.settings["REDIS_RETRY_INTERVAL"] == "5s"


def test_plain_redis_url_and_its_tuning_go_to_the_settings() -> None:
    url = "rediss://redis-master.data.svc:6380/0"
    values = {"rateLimit": {"redis": {"url": url, "failure": "closed", "timeout": "100ms", "retryInterval": "2s"}}}
    rendered = render(values)
    assert "env" not in rendered.container
    settings = Settings.from_env(rendered.settings)
    assert (settings.redis_url, settings.ratelimit_fail_open) == (url, False)
    assert (settings.redis_timeout, settings.redis_retry_interval) == (0.1, 2.0)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@redis:6379/0",
        "redis://default:hunter2@redis:6379/0",
        "rediss://gateway@redis.data.svc",
        "redis://redis:6379/0?password=hunter2",
        "unix:///run/redis.sock?db=0&password=hunter2",
    ],
)
def test_a_url_with_credentials_is_refused(url: str) -> None:
    with pytest.raises(helm.HelmRenderError, match="rateLimit.redis.url holds credentials") as refused:
        render({"rateLimit": {"redis": {"url": url}}})
    assert "hunter2" not in str(refused.value)


def test_redis_url_and_secret_together_are_refused() -> None:
    values = {"rateLimit": {"redis": {"url": "redis://redis:6379", "existingSecret": "gateway-redis"}}}
    with pytest.raises(helm.HelmRenderError, match="either rateLimit.redis.url or rateLimit.redis.existingSecret"):
        render(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rateLimit": {"redis": {"url": "http://redis:6379"}}}, "at '/rateLimit/redis/url'"),
        ({"rateLimit": {"redis": {"failure": "half"}}}, "at '/rateLimit/redis/failure': value must be one of"),
        ({"rateLimit": {"redis": {"timeout": "fast"}}}, "at '/rateLimit/redis/timeout'"),
        ({"auth": {"keys": {"reloadInterval": "10 s"}}}, "at '/auth/keys/reloadInterval'"),
        ({"auth": {"keys": {"existingSecret": "Keys_Secret"}}}, "at '/auth/keys/existingSecret'"),
        ({"auth": {"enable": True}}, "at '/auth': additional properties 'enable' not allowed"),
    ],
)
def test_schema_refuses_mistyped_access_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render(values)


# --- egress -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("redis", "port"),
    [
        ({"url": "redis://redis-master.data.svc/0"}, 6379),
        ({"url": "rediss://redis-master.data.svc:6380/0"}, 6380),
        ({"existingSecret": "gateway-redis"}, 6379),
        ({"existingSecret": "gateway-redis", "port": 16379}, 16379),
    ],
)
def test_network_policy_lets_the_gateway_reach_redis(redis: dict[str, Any], port: int) -> None:
    assert egress_ports({"rateLimit": {"redis": redis}}) == [53, 53, port, 443]


def test_network_policy_lets_the_gateway_reach_the_issuer_and_only_the_peers_given() -> None:
    peers = [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    redis_peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}}]
    values = {
        **OIDC,
        **REDIS_SECRET,
        "networkPolicy": {**RESTRICTED["networkPolicy"], "oidcTo": peers, "redisTo": redis_peers},
        "auth": {**OIDC["auth"], "oidc": {**OIDC["auth"]["oidc"], "issuer": "https://login.example.com:8443/realms"}},
    }
    rules = render(values).one("NetworkPolicy")["spec"]["egress"]
    assert rules[1] == {"ports": [{"port": 6379, "protocol": "TCP"}], "to": redis_peers}
    assert rules[2] == {"ports": [{"port": 8443, "protocol": "TCP"}], "to": peers}
    assert egress_ports(OIDC) == [53, 53, 443, 443]


def test_no_egress_rule_without_redis_or_issuer_or_over_a_unix_socket() -> None:
    assert egress_ports({}) == [53, 53, 443]
    assert egress_ports({"rateLimit": {"redis": {"url": "unix:///run/redis/redis.sock"}}}) == [53, 53, 443]
    assert egress_ports({"auth": {"oidc": {"issuer": "http://localhost:8081/realms", "clientId": "x"}}}) == [
        53,
        53,
        443,
    ]


# --- sidecar mode -----------------------------------------------------------------------------------------------


def test_sidecar_notes_tell_what_to_add_to_the_pod() -> None:
    rendered = render({"mode": "sidecar", **AUTH_KEYS, **REDIS_SECRET})
    assert rendered.kinds() == ["ConfigMap", "ConfigMap"]
    assert rendered.settings["AUTH_KEYS_FILE"] == "/etc/llm-gateway/keys/keys.yaml"
    assert f"mount Secret {KEYS_SECRET} at /etc/llm-gateway/keys (a directory, no subPath" in rendered.notes
    assert "REDIS_URL from Secret gateway-redis, key redis-url" in rendered.notes
    assert f"{RELEASE}-settings" in rendered.notes
