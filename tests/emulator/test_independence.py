"""The emulator shares no code with what it stands in for: no import crosses the line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.procs import REPO

PRODUCT = {"shared", "ingress", "workers", "switchboard"}


def imported_packages(folder: Path) -> dict[str, set[str]]:
    """Top-level packages each module under ``folder`` imports, anywhere in the module
    (relative imports stay inside the package and are left out)."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(folder))] = names
    return found


def test_the_walk_finds_imports_inside_functions(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("import os.path\nfrom . import b\n", encoding="utf-8")
    (tmp_path / "sub" / "c.py").write_text(
        "def f():\n    from shared.settings import x\n    import workers.sessions, yaml\n",
        encoding="utf-8",
    )
    assert imported_packages(tmp_path) == {
        "a.py": {"os"},
        "sub/c.py": {"shared", "workers", "yaml"},
    }


def test_the_emulator_imports_nothing_of_switchboard() -> None:
    imports = imported_packages(REPO / "emulator")
    assert "sideband.py" in imports
    crossing = {path: names & PRODUCT for path, names in imports.items()}
    assert {path: names for path, names in crossing.items() if names} == {}


@pytest.mark.parametrize("package", ["shared", "ingress", "workers"])
def test_switchboard_imports_nothing_of_the_emulator(package: str) -> None:
    imports = imported_packages(REPO / package)
    assert imports
    assert [path for path, names in imports.items() if "emulator" in names] == []
