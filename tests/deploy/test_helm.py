"""The Helm chart, rendered by Helm's own engine with several value sets: lint-clean, valid Kubernetes, and the
properties a platform review checks (table, secrets, probes, hardening, switches, rollouts, settings)."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import helm_python as helm
import pytest
import yaml

from gateway.app import create_app
from gateway.config.providers import parse_table
from gateway.config.settings import Settings, parse_duration
from gateway.runtime.state import STATE

from .chart import (
    CHART,
    CUSTOM_KINDS,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    ROOT,
    containers,
    lint,
    render,
    validate,
)

TEST_KEY = "sk-test-only-not-a-real-key"
DEMO_TABLE = yaml.safe_load((ROOT / "config" / "demo.providers.yaml").read_text("utf-8"))
EVERYTHING_ON: dict[str, Any] = {
    "image": {"digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "regcred"}],
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
        "tls": [{"secretName": "gateway-ingress-tls", "hosts": ["llm-gateway.example.com"]}],
    },
    "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80},
    "podDisruptionBudget": {"enabled": True},
    "metrics": {
        "enabled": True,
        "scrapeAnnotations": True,
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    },
    "networkPolicy": {
        "enabled": True,
        "restrictEgress": True,
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    },
    "topologySpread": {"enabled": True},
    "tls": {"existingSecret": "gateway-serving-cert"},
    "providerKeys": {"create": True, "keys": {"OPENAI_API_KEY": TEST_KEY}},
    "auth": {
        "enabled": True,
        "keys": {"existingSecret": "gateway-client-keys"},
        "oidc": {
            "issuer": "https://login.example.com/realms/ai",
            "clientId": "llm-gateway",
            "clientSecret": {"existingSecret": "gateway-oidc"},
            "policyClaim": "groups",
        },
    },
    "rateLimit": {"redis": {"existingSecret": "gateway-redis", "failure": "closed"}},
    "extraEnv": [{"name": "TEAM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "team", "key": "key"}}}],
    "extraEnvFrom": [{"secretRef": {"name": "more-provider-keys"}}],
    "priorityClassName": "gateway-critical",
    "podAnnotations": {"team": "platform"},
}
EXISTING = {
    "providers": {"existingConfigMap": "team-providers", "existingConfigMapKey": "table.yaml"},
    "providerKeys": {"existingSecret": "team-provider-keys", "optional": False},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-on": EVERYTHING_ON,
    "sidecar": {"mode": "sidecar"},
    "existing-secret-and-configmap": EXISTING,
    "inline-table": {"providers": {"table": DEMO_TABLE}},
    "in-place-reload": {"reload": {"mode": "inPlace"}},
    "auth-keys-plain-redis": {
        "auth": {"enabled": True, "keys": {"existingSecret": "gateway-client-keys"}},
        "rateLimit": {"redis": {"url": "redis://redis-master.data.svc:6379/0"}},
    },
    "sidecar-auth": {
        "mode": "sidecar",
        "auth": {"enabled": True, "keys": {"existingSecret": "gateway-client-keys"}},
        "rateLimit": {"redis": {"existingSecret": "gateway-redis"}},
    },
}
SERVICE_SETS = [name for name in VALUE_SETS if VALUE_SETS[name].get("mode") != "sidecar"]
CREDENTIAL = re.compile(r"(_API_KEY|SECRET|PASSWORD|TOKEN)$|^REDIS_URL$")
# Second spellings the gateway also reads: the chart writes the first one only.
ALIASES = {"TELEMETRY_ENABLED": "TELEMETRY_ENABLE", "AUTH_ENABLED": "AUTH_ENABLE", "EXPOSE_MCP": "MCP_EXPOSE"}
SWITCHES = [
    ("ingress", {"ingress": {"enabled": True}}, "Ingress"),
    ("autoscaling", {"autoscaling": {"enabled": True}}, "HorizontalPodAutoscaler"),
    ("podDisruptionBudget", {"podDisruptionBudget": {"enabled": True}}, "PodDisruptionBudget"),
    ("serviceMonitor", {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True}}}, "ServiceMonitor"),
    ("networkPolicy", {"networkPolicy": {"enabled": True}}, "NetworkPolicy"),
    ("providerKeys.create", {"providerKeys": {"create": True, "keys": {"OPENAI_API_KEY": TEST_KEY}}}, "Secret"),
]


def holds_credentials(url: str) -> bool:
    """A user or password in a URL's authority, or redis-py's `?password=` / `?username=` parameters."""
    parts = urlsplit(url)
    return bool(parts.username or parts.password or {"password", "username"} & set(parse_qs(parts.query)))


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge value layers the way Helm coalesces `-f` files."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


# --- Helm's own checks and the Kubernetes schemas ---------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_reports_nothing_above_info(name: str) -> None:
    report = lint(VALUE_SETS[name])
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_is_valid_kubernetes(name: str, version: str) -> None:
    rendered = render(VALUE_SETS[name])
    assert rendered.objects
    for obj in rendered.objects:
        validate(obj, version)


def test_strict_validation_catches_an_unknown_field() -> None:
    deployment = render().one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {"path": "/health"}
    with pytest.raises(Exception, match="httpGett"):
        validate(deployment, KUBERNETES_VERSIONS[-1])


def test_service_monitor_matches_the_metrics_port_of_the_service() -> None:
    rendered = render(EVERYTHING_ON)
    monitor = rendered.one("ServiceMonitor")
    assert (monitor["apiVersion"], monitor["kind"]) in CUSTOM_KINDS
    service = rendered.one("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["metrics"]["port"] == 9464 and ports["metrics"]["targetPort"] == "metrics"
    container_ports = {p["name"]: p["containerPort"] for p in rendered.container["ports"]}
    assert container_ports == {"http": 8080, "metrics": 9464}
    assert (rendered.settings["TELEMETRY_ENABLE"], rendered.settings["TELEMETRY_METRICS_PORT"]) == ("true", "9464")
    annotations = rendered.pod["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "9464")
    assert annotations["prometheus.io/path"] == "/metrics"


# --- the provider table -----------------------------------------------------------------------------------------


def table_of(rendered_text: str) -> Any:
    return yaml.safe_load(rendered_text)


def test_default_table_is_the_repository_providers_yaml() -> None:
    rendered = render()
    text = rendered.one("ConfigMap", f"{RELEASE}-providers")["data"]["providers.yaml"]
    expected = yaml.safe_load((ROOT / "providers.yaml").read_text("utf-8"))
    assert table_of(text) == expected
    # The gateway accepts it as it is, with the same providers in the same order.
    assert list(parse_table(text, {}, source="configmap").providers) == list(expected["providers"])


def test_bundled_table_is_a_faithful_copy() -> None:
    bundled = yaml.safe_load((CHART / "files" / "providers.yaml").read_text("utf-8"))
    assert bundled == yaml.safe_load((ROOT / "providers.yaml").read_text("utf-8")), (
        "deploy/helm/files/providers.yaml differs from providers.yaml: cp providers.yaml deploy/helm/files/"
    )


def test_inline_table_replaces_the_bundled_one_whole() -> None:
    rendered = render(VALUE_SETS["inline-table"])
    text = rendered.one("ConfigMap", f"{RELEASE}-providers")["data"]["providers.yaml"]
    assert table_of(text) == DEMO_TABLE
    assert list(parse_table(text, {}).providers) == ["demo"]


def test_providers_file_points_into_the_mounted_directory() -> None:
    rendered = render()
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    volumes = {v["name"]: v for v in rendered.pod["spec"]["volumes"]}
    assert "subPath" not in mounts["providers"], "a subPath mount never sees ConfigMap updates"
    assert volumes["providers"]["configMap"]["name"] == f"{RELEASE}-providers"
    assert rendered.settings["PROVIDERS_FILE"] == f"{mounts['providers']['mountPath']}/providers.yaml"


def test_existing_configmap_and_secret_are_used_and_not_made() -> None:
    rendered = render(EXISTING)
    assert [obj["metadata"]["name"] for obj in rendered.all("ConfigMap")] == [f"{RELEASE}-settings"]
    assert not rendered.has("Secret")
    volumes = {v["name"]: v for v in rendered.pod["spec"]["volumes"]}
    assert volumes["providers"]["configMap"] == {
        "name": "team-providers",
        "items": [{"key": "table.yaml", "path": "table.yaml"}],
    }
    assert rendered.settings["PROVIDERS_FILE"] == "/etc/llm-gateway/providers/table.yaml"
    assert {"secretRef": {"name": "team-provider-keys", "optional": False}} in rendered.container["envFrom"]
    # The chart cannot see the operator's ConfigMap: no checksum to pretend with.
    assert "checksum/providers" not in rendered.pod["metadata"]["annotations"]


# --- secrets ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_keys_come_only_from_secret_refs(name: str) -> None:
    rendered = render(VALUE_SETS[name])
    for config_map in rendered.all("ConfigMap"):
        data = config_map["data"]
        # A Redis URL is there only when the chart could see it holds no credentials.
        assert not [
            key for key in data if CREDENTIAL.search(key) and (key != "REDIS_URL" or holds_credentials(data[key]))
        ]
        assert TEST_KEY not in yaml.safe_dump(config_map)
    for obj in rendered.objects:
        if obj["kind"] != "Secret":
            assert TEST_KEY not in yaml.safe_dump(obj), obj["kind"]
    if not rendered.has("Deployment"):
        return
    for container in containers(rendered.pod["spec"]):
        for entry in container.get("env", []):
            if CREDENTIAL.search(entry["name"]):
                assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], entry
        sources = [next(iter(source)) for source in container["envFrom"]]
        assert set(sources) <= {"configMapRef", "secretRef"}
        config_maps = [source["configMapRef"]["name"] for source in container["envFrom"] if "configMapRef" in source]
        assert config_maps == [f"{RELEASE}-settings"]


def test_default_keys_secret_is_an_existing_one_named_after_the_release() -> None:
    rendered = render()
    assert not rendered.has("Secret")
    assert {"secretRef": {"name": f"{RELEASE}-provider-keys", "optional": True}} in rendered.container["envFrom"]
    assert f"kubectl -n {NAMESPACE} create secret generic {RELEASE}-provider-keys" in rendered.notes


def test_chart_made_secret_holds_the_keys_and_rolls_pods_when_they_change() -> None:
    one = render({"providerKeys": {"create": True, "keys": {"OPENAI_API_KEY": TEST_KEY}}})
    secret = one.one("Secret", f"{RELEASE}-provider-keys")
    assert secret["stringData"] == {"OPENAI_API_KEY": TEST_KEY}
    two = render({"providerKeys": {"create": True, "keys": {"OPENAI_API_KEY": TEST_KEY + "2"}}})
    key = "checksum/provider-keys"
    assert one.pod["metadata"]["annotations"][key] != two.pod["metadata"]["annotations"][key]


# --- probes and the routes behind them --------------------------------------------------------------------------


def gateway_get_routes() -> set[str]:
    app = create_app(Settings(), parse_table(yaml.safe_dump(DEMO_TABLE), {}))
    return {
        route.resource.canonical
        for route in app.router.routes()
        if route.method == "GET" and route.resource is not None
    }


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_probes_point_at_real_endpoints(name: str) -> None:
    container = render(VALUE_SETS[name]).container
    routes = gateway_get_routes()
    expected = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
    for probe, path in expected.items():
        assert container[probe]["httpGet"]["path"] == path
        assert container[probe]["httpGet"]["port"] == "http"
        assert path in routes


async def test_ready_turns_503_while_draining_and_health_stays_200(aiohttp_client) -> None:
    app = create_app(Settings(), parse_table(yaml.safe_dump(DEMO_TABLE), {}))
    client = await aiohttp_client(app)
    assert (await client.get("/ready")).status == 200
    app[STATE].draining = True
    ready = await client.get("/ready")
    assert (ready.status, await ready.read()) == (503, b'{"status":"draining"}')
    assert (await client.get("/health")).status == 200


def test_tls_serves_https_with_the_mounted_secret() -> None:
    rendered = render({"tls": {"existingSecret": "gateway-serving-cert"}})
    assert rendered.settings["SERVER_TLS_CERT_PATH"] == "/etc/llm-gateway/tls/tls.crt"
    assert rendered.settings["SERVER_TLS_KEY_PATH"] == "/etc/llm-gateway/tls/tls.key"
    volumes = {v["name"]: v for v in rendered.pod["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "gateway-serving-cert"
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    assert (mounts["tls"]["mountPath"], mounts["tls"]["readOnly"]) == ("/etc/llm-gateway/tls", True)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert rendered.container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert rendered.one("Service")["spec"]["ports"][0]["appProtocol"] == "https"


# --- hardening --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICE_SETS)
def test_security_context_is_hardened(name: str) -> None:
    rendered = render(VALUE_SETS[name])
    pod = rendered.pod["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    context = rendered.container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = rendered.container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    # The root filesystem is read-only: the only writable place is a bounded /tmp.
    mounts = {m["mountPath"]: m["name"] for m in rendered.container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "64Mi"}


def test_service_account_token_is_not_mounted() -> None:
    rendered = render()
    assert rendered.one("ServiceAccount")["automountServiceAccountToken"] is False
    assert rendered.pod["spec"]["serviceAccountName"] == RELEASE


# --- optional objects -------------------------------------------------------------------------------------------


def test_defaults_render_only_the_core_objects() -> None:
    assert render().kinds() == ["ConfigMap", "ConfigMap", "Deployment", "Service", "ServiceAccount"]
    pod = render().pod
    assert "topologySpreadConstraints" not in pod["spec"]
    assert not [key for key in pod["metadata"]["annotations"] if key.startswith("prometheus.io/")]
    assert render().settings["TELEMETRY_ENABLE"] == "false"


@pytest.mark.parametrize(("switch", "values", "kind"), SWITCHES, ids=[s[0] for s in SWITCHES])
def test_optional_object_appears_exactly_when_switched_on(switch: str, values: dict[str, Any], kind: str) -> None:
    assert not render().has(kind)
    assert len(render(values).all(kind)) == 1
    if kind != "Secret":  # the one object that sidecar mode makes too
        assert not render(merged(values, {"mode": "sidecar"})).has(kind)


def test_autoscaling_owns_the_replica_count() -> None:
    assert render().one("Deployment")["spec"]["replicas"] == 2
    rendered = render({"autoscaling": {"enabled": True}})
    assert "replicas" not in rendered.one("Deployment")["spec"]
    hpa = rendered.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]


def test_topology_spread_when_switched_on() -> None:
    constraints = render({"topologySpread": {"enabled": True}}).pod["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert all(c["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE for c in constraints)


def test_network_policy_admits_the_api_and_metrics_ports_and_dns() -> None:
    policy = render(EVERYTHING_ON).one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [rule["ports"][0]["port"] for rule in policy["ingress"]] == ["http", "metrics"]
    assert policy["ingress"][0]["from"] == EVERYTHING_ON["networkPolicy"]["ingressFrom"]
    egress_ports = [port["port"] for rule in policy["egress"] for port in rule["ports"]]
    # DNS, Redis (rate limits), the OIDC issuer, then networkPolicy.egress (the providers).
    assert egress_ports == [53, 53, 6379, 443, 443]
    assert render({"networkPolicy": {"enabled": True}}).one("NetworkPolicy")["spec"]["policyTypes"] == ["Ingress"]


def test_pdb_takes_max_unavailable_instead_when_set() -> None:
    assert render({"podDisruptionBudget": {"enabled": True}}).one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    spec = render({"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}}).one("PodDisruptionBudget")["spec"]
    assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec


def test_extra_env_and_env_from_are_passed_after_the_charts_own() -> None:
    container = render(EVERYTHING_ON).container
    assert [entry["name"] for entry in container["env"]] == ["REDIS_URL", "AUTH_OIDC_CLIENT_SECRET", "TEAM_API_KEY"]
    assert container["env"][-1:] == EVERYTHING_ON["extraEnv"]
    assert "env" not in render().container
    assert container["envFrom"][-1] == {"secretRef": {"name": "more-provider-keys"}}
    assert container["image"] == "llm-gateway@sha256:" + "a" * 64


# --- rollouts ---------------------------------------------------------------------------------------------------


def annotations(values: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = render(values).pod["metadata"]["annotations"]
    return found


def test_pods_roll_when_the_table_or_settings_change() -> None:
    base = annotations({})
    other_table = annotations({"providers": {"table": DEMO_TABLE}})
    other_settings = annotations({"config": {"ENABLE_VISION": "true"}})
    assert base["checksum/providers"] != other_table["checksum/providers"]
    assert base["checksum/settings"] == other_table["checksum/settings"]
    assert base["checksum/settings"] != other_settings["checksum/settings"]
    assert base["checksum/providers"] == other_settings["checksum/providers"]


def test_in_place_reload_keeps_pods_when_only_the_table_changes() -> None:
    in_place = {"reload": {"mode": "inPlace"}}
    assert "checksum/providers" not in annotations(in_place)
    assert annotations(in_place) == annotations(merged(in_place, {"providers": {"table": DEMO_TABLE}}))
    # Settings are environment variables: they still roll the pods.
    changed = annotations(merged(in_place, {"config": {"ENABLE_VISION": "true"}}))
    assert changed["checksum/settings"] != annotations(in_place)["checksum/settings"]


# --- settings ---------------------------------------------------------------------------------------------------


def test_default_settings_are_the_gateways_own_defaults() -> None:
    """What the ConfigMap sets equals what the gateway would use unset, but for what the chart decides."""
    rendered = render()
    chart_decides = replace(
        Settings(),
        providers_file="/etc/llm-gateway/providers/providers.yaml",
        shutdown_delay=5.0,
    )
    assert Settings.from_env(rendered.settings) == chart_decides


def test_drain_fits_the_termination_grace_period() -> None:
    rendered = render()
    drain = parse_duration(rendered.settings["SERVER_DRAIN_TIMEOUT"])
    delay = parse_duration(rendered.settings["SERVER_SHUTDOWN_DELAY"])
    assert delay < drain < rendered.pod["spec"]["terminationGracePeriodSeconds"]


def env_names_read_by_gateway() -> set[str]:
    source = (ROOT / "gateway" / "config" / "settings.py").read_text("utf-8")
    read = set(re.findall(r'(?:env\.get|reader\.\w+)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    # Names read in a loop (AUTH_ENABLE and its alias): every quoted NAME_LIKE_THIS in the module.
    return read | set(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"', source))


def test_every_setting_the_gateway_reads_is_in_the_settings_configmap() -> None:
    names = env_names_read_by_gateway()
    assert {"CLIENT_CONNECT_TIMEOUT", "SERVER_DRAIN_TIMEOUT", "PROVIDERS_FILE", "AUTH_ENABLE", "AUTH_ENABLED"} <= names
    data = render({"tls": {"existingSecret": "cert"}}).settings
    secret = {name for name in names if CREDENTIAL.search(name)}
    missing = names - secret - set(ALIASES) - set(data)
    assert not missing, f"add these to values.yaml `config` (or derive them in the chart): {sorted(missing)}"
    # One spelling each: the chart writes the first and refuses the alias in `config`.
    assert set(ALIASES) <= names and set(ALIASES.values()) <= set(data) and not set(ALIASES) & set(data)


def test_every_setting_the_chart_derives_is_refused_in_config() -> None:
    rendered = render({"tls": {"existingSecret": "cert"}, "rateLimit": {"redis": {"url": "redis://redis:6379"}}})
    own = yaml.safe_load((CHART / "values.yaml").read_text("utf-8"))["config"]
    derived = sorted(set(rendered.settings) - set(own) | set(ALIASES))
    assert {"SERVER_PORT", "AUTH_KEYS_FILE", "REDIS_URL", "REDIS_TIMEOUT", "TELEMETRY_ENABLED"} <= set(derived)
    for name in derived:
        with pytest.raises(helm.HelmRenderError, match=f"config.{name} is set by the chart: use [a-z]"):
            render({"config": {name: "x"}})


def spec_settings() -> list[dict[str, Any]]:
    candidates = [parent / "shared" / "spec" / "openapi.yaml" for parent in ROOT.parents]
    spec_path = next((path for path in candidates if path.is_file()), None)
    if spec_path is None:
        pytest.skip("shared/spec/openapi.yaml is not beside the repository")
    spec = yaml.safe_load(spec_path.read_text("utf-8"))
    sections = spec["components"]["schemas"]["Config"]["x-config"]["sections"]
    return [setting for section in sections for body in section.values() for setting in body["settings"]]


def test_every_spec_config_setting_is_reachable_from_values() -> None:
    settings = spec_settings()
    assert len(settings) > 40
    derived = set(render({"config": None, "tls": {"existingSecret": "cert"}}).settings)
    plain = {s["env"]: f"value-of-{s['env'].lower()}" for s in settings if not s.get("secret")}
    settable = {name: value for name, value in plain.items() if name not in derived}
    data = render({"config": settable}).settings
    assert {name: data.get(name) for name in settable} == settable
    assert set(plain) - set(settable) <= derived
    secrets = {s["env"]: "x" for s in settings if s.get("secret")}
    assert "OPENAI_API_KEY" in secrets and "AUTH_OIDC_CLIENT_SECRET" in secrets
    secret = render({"providerKeys": {"create": True, "keys": secrets}}).one("Secret")
    assert set(secret["stringData"]) == set(secrets)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "AUTH_OIDC_CLIENT_SECRET", "REDIS_PASSWORD", "GITHUB_TOKEN"])
def test_credentials_are_refused_in_config(name: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=f"config.{name} looks like a credential"):
        render({"config": {name: "x"}})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {"SERVER_PORT": "9000"}}, "config.SERVER_PORT is set by the chart"),
        ({"config": {"PROVIDERS_FILE": "/x"}}, "config.PROVIDERS_FILE is set by the chart"),
        ({"config": {"TELEMETRY_ENABLE": "true"}}, "config.TELEMETRY_ENABLE is set by the chart: use metrics.enabled"),
        (
            {"config": {"AUTH_OIDC_CLIENT_ID": "x"}},
            "config.AUTH_OIDC_CLIENT_ID is set by the chart: use auth.oidc.clientId",
        ),
        (
            {"config": {"REDIS_URL": "redis://:pw@redis:6379"}},
            "config.REDIS_URL is set by the chart: use rateLimit.redis.url, or rateLimit.redis.existingSecret",
        ),
        ({"config": {"lower_case": "x"}}, "not an environment variable name"),
        ({"shutdown": {"drainTimeoutSeconds": 30}}, "must be below terminationGracePeriodSeconds"),
        ({"shutdown": {"delaySeconds": 25}}, "delaySeconds must be below shutdown.drainTimeoutSeconds"),
        ({"metrics": {"serviceMonitor": {"enabled": True}}}, "serviceMonitor.enabled needs metrics.enabled"),
        ({"metrics": {"scrapeAnnotations": True}}, "scrapeAnnotations needs metrics.enabled"),
        (
            {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
            "autoscaling.enabled needs a CPU or memory utilization target",
        ),
        ({"providerKeys": {"create": True, "existingSecret": "x"}}, "either providerKeys.create or"),
        ({"providers": {"existingConfigMap": "x", "table": DEMO_TABLE}}, "either providers.existingConfigMap or"),
    ],
)
def test_values_that_would_break_at_run_time_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "daemonset"}, "at '/mode': value must be one of 'service', 'sidecar'"),
        ({"reload": {"mode": "hot"}}, "at '/reload/mode': value must be one of 'restart', 'inPlace'"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"ingress": {"enabeld": True}}, "at '/ingress': additional properties 'enabeld' not allowed"),
        ({"config": {"ENABLE_VISION": {"on": True}}}, "at '/config/ENABLE_VISION': got object"),
        ({"server": {"port": 80800}}, "at '/server/port'"),
    ],
)
def test_values_schema_refuses_misspelt_and_mistyped_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render(values)


def test_large_numbers_are_written_whole() -> None:
    data = render({"config": {"SERVER_MAX_REQUEST_BODY_SIZE": 104857600, "CLIENT_MAX_CONNS": 100}}).settings
    assert (data["SERVER_MAX_REQUEST_BODY_SIZE"], data["CLIENT_MAX_CONNS"]) == ("104857600", "100")


# --- sidecar mode and notes -------------------------------------------------------------------------------------


def test_sidecar_mode_renders_only_the_configuration() -> None:
    rendered = render({"mode": "sidecar", "ingress": {"enabled": True}, "podDisruptionBudget": {"enabled": True}})
    assert rendered.kinds() == ["ConfigMap", "ConfigMap"]
    assert rendered.settings["SERVER_HOST"] == "127.0.0.1"
    assert rendered.settings["SERVER_SHUTDOWN_DELAY"] == "0s"
    assert "127.0.0.1:8080/v1" in rendered.notes
    assert "deploy/examples/sidecar.yaml" in rendered.notes


def test_notes_tell_how_to_call_the_gateway() -> None:
    notes = render(EVERYTHING_ON).notes
    assert f"https://{RELEASE}.{NAMESPACE}.svc.cluster.local/v1" in notes
    assert "https://llm-gateway.example.com/v1" in notes
    assert f"port-forward service/{RELEASE} 8080:80" in notes
    assert "/v1/chat/completions" in notes
    assert "create secret" not in notes  # the chart made the Secret


# --- documentation ----------------------------------------------------------------------------------------------


def value_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "config" and prefix + key != "providers.table":
            paths += value_paths(value, path + ".")
        else:
            paths.append(path)
    return paths


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text("utf-8")
    values = yaml.safe_load((CHART / "values.yaml").read_text("utf-8"))
    paths = value_paths(values)
    assert len(paths) > 60
    undocumented = [path for path in paths if f"`{path}`" not in readme]
    undocumented += [f"config.{name}" for name in values["config"] if f"`{name}`" not in readme]
    assert not undocumented


def test_default_image_is_the_gateway_version_this_repository_builds() -> None:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text("utf-8"), re.M)
    assert version is not None
    with helm.Chart.load(CHART) as chart:
        assert chart.metadata["appVersion"] == version.group(1)
    assert render().container["image"] == f"llm-gateway:{version.group(1)}"
