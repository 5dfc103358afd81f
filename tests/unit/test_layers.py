"""The engine's layers (docs/ARCHITECTURE.md): imports go downward only, and no module imports itself back.

Every import counts, including those inside functions: a cycle hidden by a function-level import is
still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "plugins" / "module_utils" / "pgbackup"

# Lower rank = lower layer. A module may import its own layer's modules and any lower layer's.
# Layers of equal rank are peers that must not import each other.
RANKS = {"core": 0, "config": 1, "model": 2, "codec": 3, "store": 3, "pg": 4, "repo": 5, "observe": 6,
         "ops": 7, "cli": 8}
ROOT_MODULES = {"": 0, "__main__": 9}  # the package itself (its __version__) and ``python -m``


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ENGINE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> str:
    return module.split(".")[0] if module.split(".")[0] in RANKS else module


def rank_of(module: str) -> int:
    top = module.split(".")[0]
    if top in RANKS:
        return RANKS[top]
    if module in ROOT_MODULES:
        return ROOT_MODULES[module]
    raise AssertionError("module %r is in no layer: put it in one of %s" % (module, ", ".join(sorted(RANKS))))


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> List[str]:
    """The engine modules one ``from ... import`` names (a name may be a submodule)."""
    if node.level == 0:
        return []
    base = module.split(".") if module else []
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[:len(base) - (node.level - 1)]
    target = ".".join(base + (node.module.split(".") if node.module else []))
    found = []
    for alias in node.names:
        sub = (target + "." if target else "") + alias.name
        if (ENGINE / (sub.replace(".", "/") + ".py")).exists() or (ENGINE / sub.replace(".", "/")).is_dir():
            found.append(sub)
        else:
            found.append(target)
    return found


def import_graph() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for path in sorted(ENGINE.rglob("*.py")):
        module = module_name(path)
        edges = graph.setdefault(module, set())
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(("seawall_pgbackup", "ansible")) for a in node.names), (
                    "%s: the engine imports itself relatively and never Ansible" % module)
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith(("seawall_pgbackup", "ansible")), (
                    "%s: the engine imports itself relatively and never Ansible" % module)
                edges.update(t for t in resolve(module, path.name == "__init__.py", node) if t != module)
    return graph


GRAPH = import_graph()


def test_every_module_is_in_a_layer() -> None:
    for module in GRAPH:
        rank_of(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_downward(module: str) -> None:
    wrong = [target for target in sorted(GRAPH[module])
             if layer_of(target) != layer_of(module) and rank_of(target) >= rank_of(module)]
    assert not wrong, "%s (layer %s) imports %s: imports go downward only (%s)" % (
        module, layer_of(module), ", ".join("%s (layer %s)" % (t, layer_of(t)) for t in wrong),
        " < ".join(sorted(RANKS, key=RANKS.get)))


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_no_import_cycle() -> None:
    # a package's __init__ importing its own submodules is how a package exposes them, not a cycle
    graph = {m: {t for t in targets if not t.startswith(m + ".")} for m, targets in GRAPH.items()}
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_checker_catches_what_it_should() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    node = ast.parse("from ..repo.catalog import Repository").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert resolve("pg.restorer", False, node) == ["repo.catalog"]
    assert rank_of("repo.catalog") > rank_of("pg.restorer")  # so that import would be refused
