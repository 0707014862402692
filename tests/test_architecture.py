"""The package's shape: imports run one way down the pipeline, and modules and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sfda"

#: io <- data <- nets / losses / metrics / inference / priors / report <- methods <- engine <- stages <- cli
LAYERS = {
    "sfda.errors": 0, "sfda.config": 0, "sfda.io": 0, "sfda.progress": 0,
    "sfda.data": 1,
    "sfda.nets": 2, "sfda.losses": 2, "sfda.metrics": 2, "sfda.inference": 2, "sfda.priors": 2, "sfda.report": 2,
    "sfda.methods": 3,
    "sfda.engine": 4,
    "sfda.stages": 5,
    "sfda.cli": 6, "sfda.cli_flags": 6, "sfda.cli_help": 6, "sfda.__main__": 6,
}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    for prefix, level in sorted(LAYERS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return level
    return None


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Every ``sfda.*`` module imported anywhere in the file (lazy imports inside functions too)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("sfda")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sfda"):
            out.append((node.lineno, node.module))
    return out


MODULES = sorted(p for p in SRC.rglob("*.py") if _module(p) != "sfda")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module(p))
def test_imports_run_one_way(path: Path):
    here = _module(path)
    level = _layer(here)
    assert level is not None, f"{here} has no layer in LAYERS: place it in the pipeline"
    for line, target in _imports(ast.parse(path.read_text())):
        there = _layer(target)
        assert there is not None, f"{here}:{line} imports {target}, which has no layer"
        assert there <= level, f"{here}:{line} imports {target} from a later stage of the pipeline"


def test_the_rule_itself_catches_an_upward_import():
    tree = ast.parse("def f():\n    from sfda.stages.adapt import adapt\n")
    assert [t for _, t in _imports(tree)] == ["sfda.stages.adapt"]
    assert _layer("sfda.stages.adapt") > _layer("sfda.engine.loop")


def _graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules among ``files`` it imports (lazy imports inside functions too). ``from
    pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``; importing a
    package's module is not counted as importing the package's ``__init__``."""
    graph = {}
    for here, path in files.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(files)
                out |= subs
                if node.module in files and len(subs) < len(node.names):
                    out.add(node.module)
        graph[here] = out - {here}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index, low, stack, found = {}, {}, [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


BENCH = SRC.parents[1] / "bench"


@pytest.mark.parametrize("files", [{_module(p): p for p in SRC.rglob("*.py")},
                                   {p.stem: p for p in BENCH.glob("*.py")}], ids=["src", "bench"])
def test_no_import_circles(files: dict[str, Path]):
    """The layers forbid upward imports; within a layer (or a folder), two modules that import each
    other (directly or round a longer loop) are refused too: one of them holds what both need."""
    assert _circles(_graph(files)) == []


def test_the_circle_rule_sees_a_lazy_circle(tmp_path: Path):
    (tmp_path / "a.py").write_text("from sfda.data import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from sfda.data.c import g\n")
    (tmp_path / "c.py").write_text("import sfda.data.a\n")
    files = {f"sfda.data.{n}": tmp_path / f"{n}.py" for n in "abc"}
    assert _circles(_graph(files)) == [["sfda.data.a", "sfda.data.b", "sfda.data.c"]]
    assert _circles(_graph({**files, "sfda.data.c": tmp_path / "b.py"})) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module(p))
def test_modules_and_functions_stay_small(path: Path):
    text = path.read_text()
    assert len(text.splitlines()) <= 300, f"{_module(path)} has {len(text.splitlines())} lines (at most 300)"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 50, f"{_module(path)}.{node.name} has {length} lines (at most 50)"


ENGINE = sorted(p for p in (SRC / "engine").rglob("*.py"))


@pytest.mark.parametrize("path", ENGINE, ids=lambda p: _module(p))
def test_the_engine_names_no_method(path: Path):
    """The loop and its parts know methods only through :class:`sfda.methods.base.Method` (what a
    method does at a step, without steps, or for the held-out objective is the method's own)."""
    text = path.read_text()
    named = [t for _, t in _imports(ast.parse(text)) if t.startswith("sfda.methods.") and t != "sfda.methods.base"]
    assert not named, f"{_module(path)} imports {named}: hand the engine what it needs through the Method"
    assert "getattr(cfg" not in text and ".cfg.lam" not in text, f"{_module(path)} reads a method's settings"


#: Literal numbers a comparison may hold where they stand: a coin flip or a continuous map's midpoint (a
#: draw below 0.5, a resampled mask above 0.5) and guards against dividing by zero; every other bound is
#: a named constant, stated once beside the reason for its value.
LITERAL_BOUNDS = {("sfda.data.spatial", 0.5), ("sfda.data.phantom", 0.5), ("sfda.data.normalize", 1e-8),
                  ("sfda.io.volume", 1e-9), ("sfda.io.volume", 1e-12)}


def _literal_bounds(tree: ast.AST) -> list[tuple[int, float]]:
    """(line, value) of each fractional number a comparison holds (0 and 1 aside)."""
    return [(node.lineno, sub.value) for node in ast.walk(tree) if isinstance(node, ast.Compare)
            for sub in ast.walk(node)
            if isinstance(sub, ast.Constant) and isinstance(sub.value, float) and sub.value not in (0.0, 1.0)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module(p))
def test_no_bound_is_restated_as_a_literal(path: Path):
    found = [(line, v) for line, v in _literal_bounds(ast.parse(path.read_text()))
             if (_module(path), v) not in LITERAL_BOUNDS]
    assert not found, (f"{_module(path)} compares against {found} (line, value): name the bound once as a module "
                       "constant and import it where it is needed")


def test_the_literal_rule_sees_a_restated_bound():
    assert _literal_bounds(ast.parse("if pred < prior * 0.25:\n    pass\n")) == [(1, 0.25)]
    assert _literal_bounds(ast.parse("VANISH = 0.25\nif pred < prior * VANISH:\n    pass\n")) == []


def test_every_module_serves_the_package():
    """A module only tests or benches import belongs with them (or goes): each module of ``src`` is
    imported by another one, or is the command line's entry point."""
    files = {_module(p): p for p in SRC.rglob("*.py")}
    used = set().union(*_graph(files).values())
    packages = {m for m, p in files.items() if p.name == "__init__.py"}
    unused = sorted(set(files) - used - packages - {"sfda.__main__"})
    assert not unused, f"{unused} are imported by no module of the package"
