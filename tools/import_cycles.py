"""Fail when aicloud's top-level packages import each other in a circle (``make check``).

The import-linter contracts in pyproject.toml say which layer may import which; this check adds
that no two packages (``aicloud.server``, ``aicloud.gateway``, ...; a top-level module such as
``aicloud.errors`` counts as one) reach each other through any chain of imports. The graph is
grimp's (the engine under import-linter): every ``import`` statement, including those inside
functions (lazy imports) and under ``TYPE_CHECKING``. The package ``aicloud`` itself (its
``__init__`` re-exports the SDK) is left out.

    python tools/import_cycles.py        # prints each circle with one import per edge; exit 1 if any
"""

from __future__ import annotations

import sys

import grimp

ROOT = "aicloud"


def package_of(module: str) -> str:
    """``aicloud.server.routes.jobs`` → ``aicloud.server``."""
    return ".".join(module.split(".")[:2])


def package_edges(graph: grimp.ImportGraph) -> dict[tuple[str, str], tuple[str, str]]:
    """(importer package, imported package) → one module-level import that makes the edge."""
    edges: dict[tuple[str, str], tuple[str, str]] = {}
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            a, b = package_of(module), package_of(imported)
            if a != b and ROOT not in (a, b):
                edges.setdefault((a, b), (module, imported))
    return edges


def circles(edges: dict[tuple[str, str], tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan, iterative)."""
    succ: dict[str, list[str]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(succ):
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(succ[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def main() -> int:
    graph = grimp.build_graph(ROOT)
    edges = package_edges(graph)
    found = circles(edges)
    if not found:
        print(f"no import circles between aicloud's {len({p for e in edges for p in e})} packages")
        return 0
    for component in found:
        print("import circle between " + ", ".join(component) + ":")
        for (a, b), (module, imported) in sorted(edges.items()):
            if a in component and b in component:
                print(f"  {a} -> {b}   ({module} imports {imported})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
