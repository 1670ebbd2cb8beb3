"""The layout keeps its shape: imports run one way down the pipeline's layers, and the tree that
README's Layout section and docs/architecture.md describe is the tree on disk."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nmt"

# Top to bottom: a module may import its own package and anything in a lower layer; packages of
# one layer are independent of each other, except the base modules, which are one layer.
LAYERS = [
    ["__main__"],
    ["cli"],
    ["bench"],
    ["serve"],
    ["train", "translate", "preprocess"],
    ["decode", "evaluate"],
    ["model"],
    ["config"],
    ["data"],
    ["base: errors fileio device threads distributed __init__"],
]
BASE = LAYERS[-1][0].split(": ")[1].split()
RANK = {name: i for i, layer in enumerate(LAYERS[:-1]) for name in layer} | {
    name: len(LAYERS) - 1 for name in BASE
}


def _unit(path: Path, package: Path = PACKAGE) -> str:
    """The layer member a file belongs to: its top-level package or module under nmt/."""
    return path.relative_to(package).with_suffix("").parts[0]


def _imported_units(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, member) of every `nmt` import in a module, function-level imports included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "nmt":  # `from nmt import fileio` names a module; __version__ not
                names = [f"nmt.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "nmt":
                unit = parts[1] if len(parts) > 1 and parts[1] in RANK else "__init__"
                found.append((node.lineno, unit))
    return found


def layer_violations(package: Path = PACKAGE) -> list[str]:
    """Every import that runs upward, or sideways between independent packages of one layer."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        me = _unit(path, package)
        for line, unit in _imported_units(ast.parse(path.read_text(encoding="utf-8"))):
            if unit == me or RANK[unit] > RANK[me] or (me in BASE and unit in BASE):
                continue
            where = "above it" if RANK[unit] < RANK[me] else "beside it"
            problems.append(
                f"{path.relative_to(package.parent)}:{line}: {me} imports {unit} ({where})"
            )
    return problems


def test_every_top_level_module_has_a_layer():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units <= set(RANK), f"give these a layer in LAYERS: {sorted(units - set(RANK))}"


def test_imports_run_down_the_layers():
    assert layer_violations() == []


def test_the_contract_catches_an_upward_import(tmp_path):
    """The check itself: a model module importing the translator is reported."""
    fake = tmp_path / "nmt"
    (fake / "model").mkdir(parents=True)
    (fake / "translate").mkdir()
    (fake / "model" / "x.py").write_text("def f():\n    from nmt.translate import Translator\n")
    (fake / "translate" / "y.py").write_text("from nmt.model import x\n")
    assert layer_violations(fake) == ["nmt/model/x.py:2: model imports translate (above it)"]


def _tree() -> set[str]:
    """Every package and top-level module of nmt/ as `nmt/x/` or `nmt/x.py`, and every module
    inside a package as `nmt/x/y.py` (package __init__ files left out)."""
    paths = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if path.name != "__init__.py" or path.parent != PACKAGE:
            paths.add(rel)
        if path.parent != PACKAGE:
            paths.add(path.parent.relative_to(ROOT).as_posix() + "/")
    return {p for p in paths if not p.endswith("/__init__.py")}


def _named_paths(text: str) -> set[str]:
    return set(re.findall(r"\bnmt/(?:[a-z0-9_]+/)*(?:[a-z0-9_]+\.py|[a-z0-9_]+/)", text))


@pytest.mark.parametrize("doc", ["README.md", "docs/architecture.md"])
def test_docs_name_only_paths_that_exist(doc):
    named = _named_paths((ROOT / doc).read_text(encoding="utf-8"))
    assert named - _tree() == set(), f"{doc} names paths that are not in the tree"


def test_architecture_tour_covers_every_module():
    named = _named_paths((ROOT / "docs/architecture.md").read_text(encoding="utf-8"))
    missing = {p for p in _tree() if p.endswith(".py")} - named
    assert missing == set(), f"docs/architecture.md does not mention {sorted(missing)}"


def test_readme_layout_lists_every_module_and_no_other():
    """Each module's file name is in README's Layout section, and every file name there exists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    names = {p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    names |= {p.name + "/" for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    listed = set(re.findall(r"\b[a-z0-9_]+\.py\b|\b[a-z0-9_]+/", layout))
    missing = {n for n in names if n not in listed}
    assert missing == set(), f"README's Layout section does not list {sorted(missing)}"
    others = {p.name for d in ("scripts", "tests") for p in (ROOT / d).glob("*.py")}
    dirs = {p.name + "/" for d in (ROOT, ROOT / "tests", ROOT / "docs") for p in d.iterdir()}
    dirs |= {p.name + "/" for p in PACKAGE.rglob("*") if p.is_dir()}
    stale = {n for n in listed if n not in names | others | dirs}
    assert stale == set(), f"README's Layout section names what is not in the tree: {stale}"
