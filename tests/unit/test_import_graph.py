"""The import graph of `services`, `gateway` and `deploy` has no cycles (issue 19).

grimp (the import-graph library behind import-linter) parses every import statement,
including the ones inside functions, so a cycle hidden behind a function-level import
counts. Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import grimp
import pytest

PACKAGES = ("services", "gateway", "deploy")

# Cycles known when this test was written, each to be broken by the branch that owns the
# code (an entry here is a debt, never a place for a new cycle): the results bulk export's
# tables import `metadata` from orm.py, which imports them back to register them.
KNOWN_CYCLES: list[list[str]] = []


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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


def test_the_import_graph_has_no_cycles(graph: grimp.ImportGraph) -> None:
    assert len(graph.modules) > 100  # the walk saw the packages, not an empty graph
    assert [c for c in _cycles(graph) if c not in KNOWN_CYCLES] == []


def test_function_level_imports_count(graph: grimp.ImportGraph) -> None:
    # gateway.render imports openapi at module level since gateway/surface.py exists;
    # services.common.tokens imports the DPoP checker inside a function: both are edges.
    assert graph.direct_import_exists(importer="gateway.render", imported="gateway.openapi")
    assert graph.direct_import_exists(
        importer="services.common.tokens", imported="services.common.dpop"
    )


def test_render_and_openapi_share_only_the_surface_model(graph: grimp.ImportGraph) -> None:
    # gateway/surface.py is the model both read; openapi never reaches into the Envoy side,
    # and the builders in gateway/envoy/ never import the assembly (render.py) that uses them.
    gateway_imports = {
        m for m in graph.find_modules_directly_imported_by("gateway.openapi") if m != "gateway"
    }
    assert {m for m in gateway_imports if m.startswith("gateway.")} == {"gateway.surface"}
    builders = graph.find_children("gateway.envoy")
    assert builders, "gateway/envoy/ has no modules"
    for module in builders:
        assert not graph.chain_exists(importer=module, imported="gateway.render")
    assert not graph.chain_exists(importer="gateway.surface", imported="gateway.render")
    assert not graph.chain_exists(importer="gateway.surface", imported="gateway.openapi")


def test_a_cycle_is_found() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.y", imported="a.z")
    assert _cycles(graph) == [["a.x", "a.y"]]
