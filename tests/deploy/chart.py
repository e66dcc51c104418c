"""Rendering the Helm chart with Helm's own engine (helm-python-sdk, Helm's Go SDK, offline) for the deploy tests,
and checking manifests against the Kubernetes API schemas (kubernetes-validate, strict)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm"
RELEASE = "llm-gateway"
NAMESPACE = "ai"
# The chart's kubeVersion floor and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
# Kinds whose schema is not part of Kubernetes itself: checked field by field in the tests instead.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@dataclass(frozen=True)
class Rendered:
    """The objects one `helm template` produces, and the NOTES it prints."""

    objects: list[dict[str, Any]]
    notes: str

    def kinds(self) -> list[str]:
        return sorted(obj["kind"] for obj in self.objects)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [obj for obj in self.all(kind) if name is None or obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}: {self.kinds()}"
        return found[0]

    def has(self, kind: str) -> bool:
        return bool(self.all(kind))

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.pod["spec"]["containers"]
        return next(c for c in containers if c["name"] == "gateway")

    @property
    def settings(self) -> dict[str, str]:
        data: dict[str, str] = self.one("ConfigMap", f"{RELEASE}-settings")["data"]
        return data


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE) -> Rendered:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name=name, namespace=NAMESPACE)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return Rendered(objects, notes)


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    report: dict[str, Any] = helm.lint(CHART, values or {}, strict=True, namespace=NAMESPACE)
    return report


def validate(obj: dict[str, Any], version: str) -> None:
    """Raise kubernetes_validate's ValidationError when `obj` breaks the API schema of `version` (strict: no
    unknown fields)."""
    if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
        return
    kubernetes_validate.validate(obj, version, strict=True)


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec.get("containers", [])
