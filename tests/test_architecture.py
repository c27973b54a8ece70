"""The house rules, read from the code with `ast` (no product module is imported here):

- no import circle among the product modules (model/, app/, review/, train.py), counting every
  import, also those inside functions;
- no library module imports a command (model/cli/, train.py);
- no folder holds more than 15 modules, and the top of model/ at most 4;
- no function or method runs past 80 lines;
- every `python -m MODULE` named in the README, docs/, bundles' meta.json and the product code
  names a module that exists.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("model", "app", "review")
COMMAND_PACKAGES = ("model.cli",)
COMMAND_MODULES = ("train",)
MAX_MODULES_PER_FOLDER = 15
MAX_MODEL_TOP = 4
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def product_files() -> list[Path]:
    files = [ROOT / "train.py"]
    for pkg in PRODUCT:
        files += sorted(p for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every product module that `path` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in known:  # `from pkg.mod import fn` -> pkg.mod
            name = name.rpartition(".")[0]
        if name and name != me:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}" if base else a.name
                add(full if full in known else base)
    return found


def import_graph() -> dict[str, set[str]]:
    files = product_files()
    known = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, known) for p in files}


def is_command(name: str) -> bool:
    return name in COMMAND_MODULES or any(name == c or name.startswith(c + ".") for c in COMMAND_PACKAGES)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a self-import."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_library_module_imports_a_command():
    bad = [f"{m} imports {d}" for m, deps in import_graph().items() if not is_command(m)
           for d in deps if is_command(d)]
    assert not bad, bad


def test_folders_stay_small():
    counts: dict[Path, int] = defaultdict(int)
    for p in product_files():
        if p.name != "__init__.py":
            counts[p.parent] += 1
    too_many = {str(d.relative_to(ROOT)): n for d, n in counts.items() if n > MAX_MODULES_PER_FOLDER}
    assert not too_many, f"folders over {MAX_MODULES_PER_FOLDER} modules: {too_many}"
    top = sorted(p.name for p in (ROOT / "model").glob("*.py"))
    assert len(top) <= MAX_MODEL_TOP, f"top of model/ holds {len(top)} modules: {top}"


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - first + 1
            if n > MAX_FUNCTION_LINES:
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                out.append(f"{where}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_past_80_lines():
    bad = [f for p in product_files() for f in long_functions(p)]
    assert not bad, bad


# ----------------------------------------------------------------------------- the checker checks
def test_cycle_finder_and_length_rule_catch_what_they_should(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    src = tmp_path / "long.py"
    src.write_text("def f():\n" + "    x = 1\n" * 85 + "\n\ndef g():\n    return 1\n")
    assert [f.split()[-3] for f in long_functions(src)] == ["f"]


def test_relative_and_function_level_imports_are_seen():
    known = {"model.nets.bundle", "model.nets", "model.data.domain", "model.data"}
    path = ROOT / "model" / "nets" / "bundle.py"
    assert "model.data.domain" in imported_modules(path, known)


# ----------------------------------------------------------------------------- module paths in prose
COMMAND_RE = re.compile(r"python3? -m ((?:model|bench|tools|review|app)(?:\.[A-Za-z_]\w*)*)")


def documented_commands() -> dict[str, set[str]]:
    """`python -m X` for product modules, from README, docs, bundles' meta.json and the code's strings."""
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "bench").glob("*.md"))]
    sources += sorted((ROOT / "assets" / "models").glob("*/meta.json"))
    sources += product_files() + sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "tools").glob("*.py"))
    found: dict[str, set[str]] = defaultdict(set)
    for path in sources:
        text = path.read_text()
        if path.suffix == ".json":
            text = json.dumps(json.loads(text))
        for m in COMMAND_RE.finditer(text):
            found[m.group(1).rstrip(".")].add(str(path.relative_to(ROOT)))
    return found


def test_every_documented_command_module_exists():
    found = documented_commands()
    assert "model.cli.evaluate" in found  # the README names it: a test that cannot fail is a defect
    missing = {m: sorted(where) for m, where in found.items() if importlib.util.find_spec(m) is None}
    assert not missing, f"`python -m` names modules that do not exist: {missing}"
