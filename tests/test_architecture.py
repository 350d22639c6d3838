"""Imports run one way: train -> agents -> htm_gym (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Top-level package of every module a file imports, at any depth of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"), [("htm_gym", {"agents", "train"}), ("agents", {"train"})]
)
def test_imports_never_point_back(package, forbidden):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    bad = {str(f.relative_to(ROOT)): imported_modules(f) & forbidden for f in files}
    assert not {f: m for f, m in bad.items() if m}


def test_the_import_scan_sees_nested_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from agents.base import Learner\n    import train.x\n")
    assert imported_modules(f) == {"agents", "train"}
