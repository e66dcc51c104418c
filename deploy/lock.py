"""Write deploy/requirements.lock: the gateway's runtime dependencies, transitive ones included, pinned exactly
to what the current environment resolved (`make lock` after `make install`). The image installs from it."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

LOCK = Path(__file__).with_name("requirements.lock")
HEADER = "# Runtime dependencies of llm-gateway, pinned for the image. Regenerate: make lock\n"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(project: str = "llm-gateway") -> dict[str, str]:
    """Every distribution the installed project needs at run time (no extras), name -> installed version."""
    found: dict[str, str] = {}
    pending = [project]
    while pending:
        dist = metadata.distribution(pending.pop())
        name = canonical(dist.metadata["Name"])
        if name in found:
            continue
        found[name] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    del found[canonical(project)]
    return dict(sorted(found.items()))


def main() -> int:
    LOCK.write_text(HEADER + "".join(f"{name}=={version}\n" for name, version in runtime_closure().items()))
    print(f"wrote {LOCK}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
