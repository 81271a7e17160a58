"""The house's import rules: the library below, GPT-2's own code above it (docs/architecture.md)."""

import ast
from pathlib import Path

from .conftest import ROOT


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_the_library_never_imports_gpt2():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m == "gpt2" or m.startswith("gpt2.")
        )
        for path in (ROOT / "lib").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_library_and_gpt2_never_import_the_scripts():
    for folder in ("lib", "gpt2"):
        for path in (ROOT / folder).rglob("*.py"):
            assert not [m for m in imported_modules(path) if m.split(".")[0] == "scripts"], path
