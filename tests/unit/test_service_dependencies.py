"""Each service's image installs the kit's dependencies plus its own extra, and nothing
another service needs: a library one service imports is in that service's extra, and an
extra holds nothing its service does not import."""

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "quality", "capa", "reporting", "notify", "console")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = {name: reqs for name, reqs in PROJECT["optional-dependencies"].items() if name != "test"}


def dist_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return match.group(0).lower().replace("_", "-")


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of absolute imports anywhere in the folder's code (lazy ones too)."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def imported_dists(*folders: Path) -> set[str]:
    owners = importlib.metadata.packages_distributions()
    modules = set().union(*(imported_modules(folder) for folder in folders))
    return {dist_name(d) for module in modules for d in owners.get(module, [])}


def test_every_extra_is_named_after_a_service():
    assert set(EXTRAS) <= set(SERVICES), EXTRAS


@pytest.mark.parametrize("name", SERVICES)
def test_a_service_imports_no_library_of_another_services_extra(name):
    uses = imported_dists(ROOT / "shared", ROOT / "services" / name)
    own = {dist_name(r) for r in EXTRAS.get(name, [])}
    others = {dist_name(r) for extra, reqs in EXTRAS.items() if extra != name for r in reqs}
    assert not (uses & others) - own, (
        f"{name} imports {sorted((uses & others) - own)}, which its image does not install: "
        f"add them to the `{name}` extra in pyproject.toml")
    assert own <= uses, \
        f"the `{name}` extra installs {sorted(own - uses)}, which {name} never imports"


def test_the_kit_needs_no_services_extra():
    everything_extra = {dist_name(r) for reqs in EXTRAS.values() for r in reqs}
    assert not imported_dists(ROOT / "shared") & everything_extra


def test_the_lock_pins_every_dependency_the_services_declare():
    """Images install from requirements.lock: a dependency added to pyproject.toml without
    `make lock` would reach production unpinned (or, in an image, not at all)."""
    pinned = dict(line.split("==", 1) for line in (ROOT / "requirements.lock").read_text()
                  .splitlines() if "==" in line and not line.startswith(("#", " ")))
    pinned = {dist_name(name): version for name, version in pinned.items()}
    declared = PROJECT["dependencies"] + [r for reqs in EXTRAS.values() for r in reqs]
    assert not {dist_name(r) for r in declared} - set(pinned), "run `make lock`"
