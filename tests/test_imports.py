"""Imports run one way (classification <- embeddings <- autolabel) and no project module imports
itself back through others: every import statement counts, also one inside a function; only
`if TYPE_CHECKING:` blocks, which never run, are left out."""
from __future__ import annotations

import ast

from tests.conftest import REPO

PACKAGES = ("classification", "embeddings", "autolabel", "segmentation", "localization")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(name: str, tree: ast.Module, known) -> set[str]:
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in node.body for n in ast.walk(sub)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m in known and m != name}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def test_no_import_circles_and_imports_run_one_way():
    trees = _modules()
    edges = {name: _imports(name, tree, trees) for name, tree in trees.items()}
    assert _cycles(edges) == []
    below = {"classification": set(), "embeddings": {"classification"}, "segmentation": {"classification"},
             "localization": {"classification"}}
    upward = [(a, b) for a, bs in edges.items() for b in bs
              if a.split(".")[0] in below and b.split(".")[0] not in below[a.split(".")[0]] | {a.split(".")[0]}]
    assert upward == []


def test_only_autolabel_imports_typer_or_mlflow():
    found = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [(name, n) for n in names if n.split(".")[0] in ("typer", "mlflow")
                      and not name.startswith("autolabel")]
    assert found == []
