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

from tools.architecture import (ROOT, cycles, import_graph, imported_modules, is_command, mermaid,
                                product_files)

MAX_COMMANDS_PER_FOLDER = 24
MAX_MODULES_PER_FOLDER = 15
MAX_MODEL_TOP = 4
MAX_FUNCTION_LINES = 80


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
    # model/cli is a flat list of entry points, one command per file (`python -m model.cli.X`, named in
    # meta.json's recorded commands), like timm's scripts beside its library: it may hold more
    limit = {ROOT / "model" / "cli": MAX_COMMANDS_PER_FOLDER}
    too_many = {str(d.relative_to(ROOT)): n for d, n in counts.items() if n > limit.get(d, MAX_MODULES_PER_FOLDER)}
    assert not too_many, f"folders over {MAX_MODULES_PER_FOLDER} modules ({MAX_COMMANDS_PER_FOLDER} commands): {too_many}"
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


def private_imports(path: Path) -> list[str]:
    """`from product.module import _name`: a private name taken from another file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("model", "app", "review"):
            out += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_private_name_crosses_a_file():
    bad = [b for p in product_files() for b in private_imports(p)]
    assert not bad, bad


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
    imp = tmp_path / "imp.py"
    imp.write_text("from model.aids.similar import _decode, DEFAULT_K\nfrom os import _exit\n")
    assert private_imports(imp) == ["imp.py: model.aids.similar._decode"]


def test_relative_and_function_level_imports_are_seen():
    known = {"model.nets.bundle", "model.nets", "model.data.domain", "model.data"}
    path = ROOT / "model" / "nets" / "bundle.py"
    assert "model.data.domain" in imported_modules(path, known)


# ----------------------------------------------------------------------------- module paths in prose
COMMAND_RE = re.compile(r"python3? -m ((?:model|bench|tools|review|app)(?:\.[a-z_][a-z0-9_]*)*)(?![A-Za-z0-9_])")


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


def test_the_architecture_page_shows_todays_diagram():
    page = (ROOT / "docs" / "architecture.md").read_text()
    shown = page.split("```mermaid\n", 1)[1].split("```", 1)[0].strip()
    assert shown == mermaid(import_graph()).strip(), "regenerate it: python -m tools.architecture"
