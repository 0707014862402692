"""Each method is stated once: the registry and the facts' table agree, every list reads them,
and no other module spells a method's name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sfda.config import PredictConfig
from sfda.config.core import load_config
from sfda.config.experiment import ExperimentConfig
from sfda.config.methods import ADAPT_METHODS, BASELINES, DISPLAY, ROWS, per_scan_methods, said
from sfda.errors import SfdaError
from sfda.methods import METHODS, build_method
from sfda.methods.base import FACTS, Method
from sfda.report import display_name

SRC = Path(__file__).resolve().parents[2] / "src" / "sfda"
#: Where a method's name may be written: its facts' table, and the method's own package.
STATED_HERE = [SRC / "config" / "methods.py", SRC / "methods"]
#: Strings that are a method's name but mean something else where they stand.
ELSEWHERE = {("stages/experiment_domains.py", "oracle"): "the config section `oracle`, named in its messages"}
#: "entropy" is also the entropy map (predict's outputs, the report's examples), so only the other
#: names are looked for; a list of methods holding "entropy" holds another name as well.
NAMES = (set(ADAPT_METHODS) | set(BASELINES)) - {"entropy"}


def test_the_registry_holds_the_table_s_methods_in_its_order():
    assert list(METHODS) == list(ADAPT_METHODS)
    for name, cls in METHODS.items():
        facts = ADAPT_METHODS[name]
        assert cls.name == name
        assert {k: getattr(cls, k) for k in FACTS} == {k: getattr(facts, k) for k in FACTS}, name


def test_a_method_restating_its_facts_is_refused():
    with pytest.raises(TypeError, match="restates source_free"):
        type("Restated", (Method,), {"name": "tent", "source_free": False})


def test_every_list_reads_the_table():
    assert ROWS == ("noadapt", "oracle", "adabn", "adaent", "adasource", "adversarial", "tent", "entropy")
    assert ExperimentConfig().methods == list(ROWS)
    assert PredictConfig.__dataclass_fields__["adapt"].metadata["choices"] == ("", *per_scan_methods())
    assert per_scan_methods() == ("adabn", "adaent", "tent", "entropy")
    assert {n: display_name(n) for n in ROWS} == DISPLAY
    assert display_name("source") == "Source"
    assert said(["a"]) == "a" and said(["a", "b", "c"]) == "a, b or c"


def test_a_per_scan_method_is_source_free_and_a_choice_elsewhere_is_refused(tmp_path):
    assert all(ADAPT_METHODS[n].source_free for n in per_scan_methods())
    with pytest.raises(SfdaError, match="one of: '', adabn, adaent, tent, entropy"):
        load_config(PredictConfig, None, ["adapt=adasource"])
    with pytest.raises(SfdaError, match="unknown method 'nope'; choose one of: adabn, adaent"):
        build_method("nope", None)


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _spelled(text: str) -> list[tuple[int, str]]:
    """(line, name) for each string in the code (docstrings and comments aside) that is a method's name."""
    tree = ast.parse(text)
    skip = _docstrings(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in NAMES and id(node) not in skip]


MODULES = sorted(p for p in SRC.rglob("*.py") if not any(p == s or s in p.parents for s in STATED_HERE))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_spells_a_method_s_name(path: Path):
    where = str(path.relative_to(SRC))
    found = [(line, name) for line, name in _spelled(path.read_text()) if (where, name) not in ELSEWHERE]
    assert not found, (f"{where} writes method names {found}: read sfda.config.methods (ADAPT_METHODS, "
                       "NOADAPT, ORACLE, DEFAULT_METHOD) or the registry instead")


def test_the_name_rule_sees_a_list_and_not_a_docstring():
    assert _spelled('"""adaent, tent."""\nx = ("", "adaent", "tent")\n# "adabn"\n') == [(2, "adaent"), (2, "tent")]
