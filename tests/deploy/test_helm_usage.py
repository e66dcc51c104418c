"""The chart's usage store: off by default; SQLite on a volume for one replica; an existing PostgreSQL through a
Secret; what the chart refuses. The settings it renders are read back with the gateway's own Settings."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest

from gateway.config.settings import Settings

from .chart import KUBERNETES_VERSIONS, Rendered, render, validate

SQLITE = {"replicaCount": 1, "usage": {"store": "sqlite"}}
POSTGRES = {"usage": {"store": "postgresql", "postgresql": {"existingSecret": "gateway-usage-db"}}}


def volumes(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in rendered.pod["spec"]["volumes"]}


def mounts(rendered: Rendered) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in rendered.container["volumeMounts"]}


def valid(rendered: Rendered) -> None:
    for version in KUBERNETES_VERSIONS:
        for obj in rendered.objects:
            validate(obj, version)


def test_off_by_default() -> None:
    rendered = render()
    assert rendered.settings["USAGE_STORE"] == "off"
    assert "usage" not in volumes(rendered)
    assert Settings.from_env(rendered.settings).usage_store is None


def test_sqlite_on_a_volume_of_its_own() -> None:
    rendered = render(SQLITE)
    valid(rendered)
    settings = Settings.from_env(rendered.settings)
    assert settings.usage_store == "/var/lib/llm-gateway/usage.db"
    assert (settings.usage_retention, settings.usage_api_enable, settings.usage_store_bodies) == (
        30 * 86400,
        False,
        False,
    )
    # The root filesystem is read-only: the file lives on the chart's volume (an emptyDir without a claim).
    assert mounts(rendered)["usage"] == "/var/lib/llm-gateway"
    assert volumes(rendered)["usage"] == {"name": "usage", "emptyDir": {"sizeLimit": "1Gi"}}


def test_sqlite_on_a_claim_with_recreate() -> None:
    values = {
        "replicaCount": 1,
        "strategy": {"type": "Recreate", "rollingUpdate": None},
        "usage": {"store": "sqlite", "sqlite": {"existingClaim": "gateway-usage"}, "retention": "90d"},
    }
    rendered = render(values)
    valid(rendered)
    assert volumes(rendered)["usage"] == {"name": "usage", "persistentVolumeClaim": {"claimName": "gateway-usage"}}
    assert Settings.from_env(rendered.settings).usage_retention == 90 * 86400


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"usage": {"store": "sqlite"}}, "usage.store sqlite keeps the rows in one pod's file: set replicaCount: 1"),
        (
            {"replicaCount": 1, "autoscaling": {"enabled": True}, "usage": {"store": "sqlite"}},
            "usage.store sqlite keeps the rows in one pod's file",
        ),
        (
            {"replicaCount": 1, "usage": {"store": "sqlite", "sqlite": {"existingClaim": "c"}}},
            "usage.sqlite.existingClaim needs strategy.type: Recreate",
        ),
        ({"usage": {"store": "postgresql"}}, "usage.store postgresql needs usage.postgresql.existingSecret"),
        ({"config": {"USAGE_STORE": "/tmp/u.db"}}, "config.USAGE_STORE is set by the chart: use usage.store"),
    ],
)
def test_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_a_bad_store_name_is_refused_by_the_schema() -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape("at '/usage/store'")):
        render({"usage": {"store": "mysql"}})


def test_postgresql_url_only_from_its_secret() -> None:
    rendered = render({**POSTGRES, "usage": {**POSTGRES["usage"], "apiEnabled": True}})
    valid(rendered)
    env = {e["name"]: e for e in rendered.container["env"]}
    assert env["USAGE_STORE"] == {
        "name": "USAGE_STORE",
        "valueFrom": {"secretKeyRef": {"name": "gateway-usage-db", "key": "url"}},
    }
    for config_map in rendered.all("ConfigMap"):
        assert "USAGE_STORE" not in config_map["data"]
    assert rendered.settings["USAGE_API_ENABLE"] == "true"
    assert "usage" not in volumes(rendered)


def test_postgresql_egress_when_egress_is_restricted() -> None:
    values = {
        **POSTGRES,
        "networkPolicy": {
            "enabled": True,
            "restrictEgress": True,
            "postgresqlTo": [{"namespaceSelector": {"matchLabels": {"name": "data"}}}],
        },
    }
    policy = render(values).one("NetworkPolicy")
    rule = next(r for r in policy["spec"]["egress"] if r["ports"] == [{"port": 5432, "protocol": "TCP"}])
    assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"name": "data"}}}]
