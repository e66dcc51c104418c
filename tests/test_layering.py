"""The layering contract in pyproject.toml ([tool.importlinter]) holds for gateway/, and `lint-imports` (run by
`make lint`) fails when a lower layer imports a higher one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_of_the_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "gateway", tree / "gateway", ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # The transport seam may not reach up into the call layer, nor the call layer into the API.
        (
            "upstream/transport.py",
            "from gateway.upstream import call",
            "gateway.upstream.transport -> gateway.upstream.call",
        ),
        ("upstream/call.py", "from gateway.api import routes", "gateway.upstream.call -> gateway.api.routes"),
        # Telemetry and access never import the API (or each other).
        ("telemetry/metrics.py", "from gateway.api import models", "gateway.telemetry.metrics -> gateway.api.models"),
        ("access/auth.py", "from gateway.telemetry import metrics", "gateway.access.auth -> gateway.telemetry.metrics"),
        # Nothing below the API reaches MCP; inside it, a server's link knows nothing of the hub above it.
        ("runtime/state.py", "from gateway.mcp import hub", "gateway.runtime.state -> gateway.mcp.hub"),
        ("mcp/link.py", "from gateway.mcp import hub", "gateway.mcp.link -> gateway.mcp.hub"),
    ],
)
def test_an_import_against_the_layers_fails_the_lint(tmp_path: Path, module: str, line: str, broken: str) -> None:
    tree = copy_of_the_tree(tmp_path)
    target = tree / "gateway" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout and broken in result.stdout, result.stdout
