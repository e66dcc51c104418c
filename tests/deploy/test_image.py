"""The container image, checked statically (no Docker engine here): multi-stage, slim base, pinned dependencies,
a non-root user matching the chart, the API and metrics ports, `python -m gateway` as entrypoint, and a build
context that holds what the wheel needs and nothing else."""

from __future__ import annotations

import json
import re
import runpy
from dataclasses import dataclass
from fnmatch import fnmatch

import yaml

from .chart import CHART, ROOT, render

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "deploy" / "requirements.lock"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@dataclass(frozen=True)
class Stage:
    base: str
    name: str
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def parse_dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text("utf-8"))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match is not None, line
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], match.group(1))
            stages.append(Stage(base, match.group(2) or "", []))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages


def final_stage() -> Stage:
    return parse_dockerfile()[1][-1]


def test_image_is_multi_stage_on_a_slim_python_base() -> None:
    _, stages = parse_dockerfile()
    assert len(stages) >= 2
    assert all(re.fullmatch(r"python:3\.1[1-9][.\d]*-slim(-\w+)?(@sha256:[0-9a-f]{64})?", s.base) for s in stages)
    build, runtime = stages[0], stages[-1]
    assert build.name == "build"
    copied_from = [args for args in runtime.all("COPY") if args.startswith("--from=")]
    assert copied_from == ["--from=build /opt/gateway /opt/gateway"]


def test_final_stage_has_no_build_tools_and_installs_nothing() -> None:
    runtime = final_stage()
    for command in runtime.all("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make|build-essential|curl|wget)\b", command), command


def test_runs_as_the_charts_non_root_user() -> None:
    users = final_stage().all("USER")
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    # USER comes after every RUN and COPY of the final stage: nothing later runs as root.
    keywords = [i.keyword for i in final_stage().instructions]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k in ("RUN", "COPY"))
    pod = render().pod["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))


def test_exposes_the_api_and_metrics_ports() -> None:
    exposed = {port for args in final_stage().all("EXPOSE") for port in args.split()}
    assert exposed == {"8080", "9464"}
    values = yaml.safe_load((CHART / "values.yaml").read_text("utf-8"))
    assert {str(values["server"]["port"]), str(values["metrics"]["port"])} == exposed


def test_entrypoint_is_python_dash_m_gateway_in_exec_form() -> None:
    (entrypoint,) = final_stage().all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "-m", "gateway"]
    assert final_stage().all("STOPSIGNAL") == ["SIGTERM"]
    env = " ".join(final_stage().all("ENV"))
    assert "PATH=/opt/gateway/bin:$PATH" in env and "PYTHONDONTWRITEBYTECODE=1" in env


def test_dependencies_are_installed_from_the_lock_as_wheels_only() -> None:
    build = parse_dockerfile()[1][0]
    installs = [run for run in build.all("RUN") if "pip install" in run]
    assert installs[0] == "/opt/gateway/bin/pip install --only-binary=:all: --requirement requirements.lock"
    assert all("--no-deps" in run for run in installs[1:])


def test_lock_pins_every_runtime_dependency_and_agrees_with_pyproject() -> None:
    lines = [line for line in LOCK.read_text("utf-8").splitlines() if line and not line.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert all(re.fullmatch(r"[a-z0-9-]+", name) and version for name, version in pins.items())
    closure = runpy.run_path(str(ROOT / "deploy" / "lock.py"))["runtime_closure"]()
    assert set(pins) == set(closure), "deploy/requirements.lock is stale: make lock"
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    dependencies = re.search(r"^dependencies = \[(.*?)\]", pyproject, re.S | re.M)
    assert dependencies is not None
    for name, version in re.findall(r'"([A-Za-z0-9_.-]+)==([^";]+)', dependencies.group(1)):
        assert pins[name.lower()] == version, name


def context_includes(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context (last matching rule wins, `!` re-includes)."""
    included = True
    for rule in DOCKERIGNORE.read_text("utf-8").splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch(prefix, pattern) for prefix in prefixes) or fnmatch(path, pattern.replace("**/", "*")):
            included = negate
    return included


def test_build_context_holds_the_sources_the_schema_target_and_nothing_private() -> None:
    for path in (
        "pyproject.toml",
        "README.md",
        "providers.yaml",
        "deploy/requirements.lock",
        "gateway/server.py",
        "gateway/config/schemas/providers.schema.json",
        # The real file behind the package's schema symlink: without it the wheel would lack the schema.
        "config/providers.schema.json",
    ):
        assert context_includes(path), path
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/process/test_server.py",
        ".env",
        "gateway/__pycache__/app.pyc",
    ):
        assert not context_includes(path), path
    assert (ROOT / "gateway" / "config" / "schemas" / "providers.schema.json").resolve() == (
        ROOT / "config" / "providers.schema.json"
    )
    build = parse_dockerfile()[1][0]
    copies = build.all("COPY")
    assert copies.index("config/ config/") < [i for i, c in enumerate(copies) if c.startswith("gateway/")][0]


def test_chart_default_image_is_the_one_make_image_builds() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    assert re.search(r"docker build -t llm-gateway:\$\(VERSION\) \.", makefile)
    assert render().container["image"].startswith("llm-gateway:")
