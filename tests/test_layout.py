"""The house's layout, as docs/architecture.md draws it: imports run one way and not too
deep, modules stay small, and the names the program keeps in DIR are spelled in one module."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out[name] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Modules of the package imported anywhere in `path`: inside functions and under
    `if TYPE_CHECKING:` too, since a type-only import is a dependency all the same."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES and m != "exporter"}


GRAPH = {
    name: _imports(path)
    for name, path in MODULES.items()
    if not name.startswith("exporter.standin")
}


@cache
def _depth(name: str, trail: tuple[str, ...] = ()) -> int:
    assert name not in trail, f"import cycle: {' -> '.join((*trail, name))}"
    below = [_depth(m, (*trail, name)) for m in GRAPH.get(name, ()) if m in GRAPH]
    return 1 + max(below, default=0)


def test_imports_have_no_cycle_and_the_longest_chain_is_eleven_modules() -> None:
    """Type-only imports counted, the longest chain is eleven modules: `python -m exporter`
    -> cli -> webhooks.service -> pipeline -> media -> resume -> download -> seam -> manifest
    -> sessions -> urls; pipeline sits eight deep (the whole export below it)."""
    depths = {name: _depth(name) for name in GRAPH}
    deepest = sorted(depths.items(), key=lambda kv: -kv[1])[:5]
    assert depths["exporter.pipeline"] <= 8, deepest
    assert max(depths.values()) <= 11, deepest


def test_only_the_command_line_reaches_into_a_sub_package() -> None:
    """The top-level modules are the floors the wings (objectstore, render, search, webhooks)
    stand on: only cli and arguments, which dispatch to them, import one."""
    offenders = [
        (name, m)
        for name, imported in GRAPH.items()
        if name.count(".") == 1 and name not in ("exporter.cli", "exporter.arguments")
        for m in imported
        if m.count(".") >= 2
    ]
    assert offenders == []


def test_the_standin_imports_nothing_from_the_package() -> None:
    """The stand-in is an independent oracle of the API: it must not share our mistakes."""
    for name, path in MODULES.items():
        if name.startswith("exporter.standin"):
            assert all(m.startswith("exporter.standin") for m in _imports(path)), name


def test_modules_stay_small() -> None:
    """cli at most 300 lines, every other module outside the stand-in at most 400."""
    for name, path in MODULES.items():
        if name.startswith("exporter.standin"):
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= (300 if name == "exporter.cli" else 400), (name, lines)


def test_the_names_kept_in_dir_are_spelled_in_the_archive_module() -> None:
    """No string literal outside archive.py names a file of ours: `.rtk-export...`, a
    `.part` temporary file, or `manifest.jsonl`."""
    offenders = []
    for name, path in MODULES.items():
        if name in ("exporter.archive",) or name.startswith("exporter.standin"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if (
                    text.startswith(".rtk-export")
                    or text.endswith(".part")
                    or text == "manifest.jsonl"
                ):
                    offenders.append((name, text))
    assert offenders == []
