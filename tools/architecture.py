"""The product's import graph, read with `ast` (nothing of the product is imported):

    python -m tools.architecture            # the package diagram (mermaid) for docs/architecture.md
    python -m tools.architecture --modules  # every module and what it imports

Product code: model/, app/, review/ and train.py. Commands: model/cli/ and train.py.
tests/test_architecture.py holds the rules (no circles, no library -> command, small folders,
short functions) on this graph, and checks that docs/architecture.md shows today's diagram.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("model", "app", "review")
COMMAND_PACKAGES = ("model.cli",)
COMMAND_MODULES = ("train",)


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def product_files(root: Path = ROOT) -> list[Path]:
    files = [root / "train.py"]
    for pkg in PRODUCT:
        files += sorted(p for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def imported_modules(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """Every product module that `path` imports, anywhere in the file (inside functions too)."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path, root)
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
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}" if base else a.name
                add(full if full in known else base)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = product_files(root)
    known = {module_name(p, root) for p in files}
    return {module_name(p, root): imported_modules(p, known, root) for p in files}


def is_command(name: str) -> bool:
    return name in COMMAND_MODULES or any(name == c or name.startswith(c + ".") for c in COMMAND_PACKAGES)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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


def package_of(module: str) -> str:
    """The diagram's box: model.X / app.X packages, review, train.py, the top modules of model/ and app/."""
    parts = module.split(".")
    if parts[0] == "train":
        return "train.py"
    if parts[0] in ("model", "app") and len(parts) >= 3:
        return ".".join(parts[:2])
    if parts[0] == "review":
        return "review"
    return module


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for m, deps in graph.items():
        a = package_of(m)
        out[a]  # every box, also those importing nothing
        for d in deps:
            b = package_of(d)
            if b != a and not b.endswith("__init__"):
                out[a].add(b)
    return out


def mermaid(graph: dict[str, set[str]]) -> str:
    """The package diagram as a mermaid flowchart (top imports bottom), sorted so it is stable."""
    pg = package_graph(graph)
    node = {name: "n_" + name.replace(".", "_").replace("/", "_") for name in pg}
    lines = ["flowchart TD"]
    for name in sorted(pg):
        lines.append(f'    {node[name]}["{name}"]')
    for a in sorted(pg):
        for b in sorted(pg[a]):
            if b in node:
                lines.append(f"    {node[a]} --> {node[b]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.architecture", description=__doc__.split("\n")[0])
    ap.add_argument("--modules", action="store_true", help="every module and what it imports")
    ap.add_argument("--write", action="store_true", help="put today's diagram into docs/architecture.md")
    args = ap.parse_args(argv)
    graph = import_graph()
    if args.write:
        page = ROOT / "docs" / "architecture.md"
        head, rest = page.read_text().split("```mermaid\n", 1)
        page.write_text(head + "```mermaid\n" + mermaid(graph).strip() + "\n```" + rest.split("```", 1)[1])
    elif args.modules:
        for m in sorted(graph):
            print(f"{m}: {', '.join(sorted(graph[m])) or '-'}")
    else:
        print(mermaid(graph))
    return 0


if __name__ == "__main__":
    sys.exit(main())
