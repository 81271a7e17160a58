"""The house's import rules: the library below, GPT-2's own code above it (docs/architecture.md)."""

import ast
import re
from pathlib import Path

from lib import FLOORS  # bottom floor first

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


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _library_graph() -> dict[str, set[str]]:
    """lib's modules and the lib modules each one imports (at the top or inside a function);
    importing lib.a.b also runs lib.a's __init__, so that is an edge too."""
    modules = {_module_name(p): p for p in (ROOT / "lib").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for m in imported_modules(path):
            if m.split(".")[0] != "lib":
                continue
            parts = m.split(".")
            edges.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
            # from lib.train import distributed: the submodule is imported too
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == m:
                    edges.update(f"{m}.{a.name}" for a in node.names if f"{m}.{a.name}" in modules)
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = {e for e in edges if e in modules and e != name and e not in own_packages}
    return graph


def test_the_library_has_no_import_cycle():
    graph = _library_graph()
    assert "lib.train.settings" in graph and "lib.study.matrix" in graph
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_an_import_cycle_is_caught(monkeypatch):
    """The cycle test's own check: the matrix's settings importing the settings tree fails it."""
    real = _library_graph()
    looped = {k: set(v) for k, v in real.items()}
    looped["lib.study.settings"].add("lib.train.settings")
    monkeypatch.setitem(globals(), "_library_graph", lambda: looped)
    try:
        test_the_library_has_no_import_cycle()
    except AssertionError as e:
        assert "lib.study.settings" in str(e) and "lib.train.settings" in str(e)
    else:
        raise AssertionError("a cycle went unnoticed")


# lib's folders, bottom floor first (docs/architecture.md). A folder imports only folders on the
# floors below its own, and lib's own modules (errors.py, fields.py, io.py) import no folder.


def _folder_arrows(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(from folder, to folder) for every import between two of lib's folders ('' = lib's own
    modules)."""

    def folder(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 2 or (ROOT / "lib" / parts[1]).is_dir() else ""

    return {(folder(a), folder(b)) for a, targets in graph.items() for b in targets if folder(a) != folder(b)}


def _arrows_up(arrows: set[tuple[str, str]]) -> list[str]:
    floor = {name: i + 1 for i, names in enumerate(FLOORS) for name in names} | {"": 0}
    return sorted(f"lib/{a} -> lib/{b}" for a, b in arrows if floor[b] >= floor[a])


def test_every_folder_of_the_library_has_a_floor():
    folders = {p.name for p in (ROOT / "lib").iterdir() if (p / "__init__.py").is_file()}
    assert folders == {name for names in FLOORS for name in names}


def test_the_architecture_picture_is_drawn_from_the_code(monkeypatch):
    """docs/architecture.md's house is scripts/architecture.py's picture of FLOORS, each folder's
    docstring and modules; a floor moved in the code changes the picture (so --check fails)."""
    import lib
    from scripts import architecture

    assert architecture.main(["--check"]) == 0
    text = (ROOT / "docs" / "architecture.md").read_text()
    drawn = [re.match(r"\s*\|--- (\S+)/", line) for line in architecture.picture().splitlines()]
    assert [m.group(1) for m in drawn if m] == [floor[0] for floor in reversed(FLOORS)]
    monkeypatch.setattr(lib, "FLOORS", (FLOORS[1], FLOORS[0], *FLOORS[2:]))
    assert architecture.with_picture(text) != text


def test_the_library_s_folders_are_layers():
    """No import between folders points up, or sideways within a floor."""
    assert _arrows_up(_folder_arrows(_library_graph())) == []


def test_an_arrow_up_between_folders_is_caught(monkeypatch):
    """The layer test's own check: measure importing train (as it once did) fails it."""
    looped = {k: set(v) for k, v in _library_graph().items()}
    looped["lib.measure.inference"].add("lib.train.loop")
    assert _arrows_up(_folder_arrows(looped)) == ["lib/measure -> lib/train"]


def test_the_settings_load_without_torch(tmp_path):
    """Reading config.py, the CLI overrides and the matrix plan import no torch (2.5 s on a laptop)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from lib.train.settings import Settings\n"
        "from lib.config.load import load_settings\n"
        "from lib.config.cli import add_override_flags\n"
        "from lib.study.matrix import expand\n"
        "from lib.config.sweep import load_sweep\n"
        "expand(Settings().replace({'matrix.enabled': True, 'matrix.multiple_optimizers': True}))\n"
        "print(sorted(m for m in ('torch', 'numpy', 'tiktoken') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_registry_entry_has_its_kconfig_symbols_and_back(kconf):
    """Each optimizer, base, AdamWPrune variant, pruning method and sparsity of the registries has
    its Kconfig choice entry, the string default that names it, and its matrix selection; and
    every such Kconfig symbol names a registry entry."""
    import kconfiglib

    from lib.adamwprune import BASES as ADAMWPRUNE_BASES
    from lib.adamwprune import VARIANTS as ADAMWPRUNE_VARIANTS
    from lib.optim import OPTIMIZERS
    from lib.pruning import METHODS
    from lib.study.settings import SPARSITIES

    def named_by(string_symbol: str) -> dict[str, str]:
        """The choice symbol behind each value of a derived string symbol."""
        return {v.name: kconfiglib.expr_str(c) for v, c in kconf.syms[string_symbol].defaults}

    def family(prefix: str) -> set[str]:
        return {s.removeprefix(prefix).lower() for s in kconf.syms if s.startswith(prefix)}

    checks = [
        (OPTIMIZERS, "OPTIMIZER", "OPTIMIZER_SELECT_", "OPTIMIZER_ENABLE_"),
        (
            tuple(ADAMWPRUNE_VARIANTS),
            "GPT2_ADAMWPRUNE_VARIANT",
            "ADAMWPRUNE_VARIANT_SELECT_",
            "GPT2_ADAMWPRUNE_VARIANT_",
        ),
        (ADAMWPRUNE_BASES, "ADAMWPRUNE_BASE_OPTIMIZER_NAME", "ADAMWPRUNE_BASE_", None),
        (METHODS, "PRUNING_METHOD", "PRUNING_SELECT_", "PRUNING_ENABLE_"),
    ]
    for names, string_symbol, select, enable in checks:
        chosen = named_by(string_symbol)
        assert set(chosen) == set(names), string_symbol
        for name in names:
            expected = "PRUNING_MODE_NONE" if name == "none" else f"{select}{name.upper()}"
            assert chosen[name] == expected, (string_symbol, name)
        selects = family(select) - ({"optimizer_name"} if select == "ADAMWPRUNE_BASE_" else set())
        assert selects == set(names) - {"none"}, select
        if enable:
            assert family(enable) == set(names), enable
    assert {int(s) for s in family("SPARSITY_ENABLE_")} == set(SPARSITIES)


def test_the_repository_runs_in_place_and_installs_no_generic_packages():
    """`pip install -e .` brings the dependencies only (no top-level lib or scripts in
    site-packages), and no entry point edits sys.path: everything runs as python -m from here."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"] == []
    for folder in ("lib", "gpt2", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "sys.path" not in path.read_text(), path
