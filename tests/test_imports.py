"""Imports point one way (docs/ARCHITECTURE.md, "Layers"), read from the source with ``ast``.

Every import counts: module level, inside functions, under ``TYPE_CHECKING``. A module may
import its own layer (without a cycle) and the layers ``ALLOWED`` names for it, nothing else.
There is no exceptions list: a new import that points up, or closes a cycle, fails here.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"npc_voice": ROOT / "npc_voice", "npc_voice_kernels": ROOT / "kernels"}

# module-name prefix -> layer; the longest matching prefix wins.
LAYER_OF = {
    "npc_voice": "app",  # cli, client, config, __main__, and the packages below not named here
    "npc_voice.server": "app",
    "npc_voice.loadtest": "app",
    "npc_voice.train": "app",
    "npc_voice.v1": "app",  # generated gRPC code (imports only itself)
    "npc_voice.engine": "engine",
    "npc_voice.frontend": "frontend",
    "npc_voice.model": "model",
    "npc_voice.audio": "audio",
    "npc_voice_kernels": "kernels",
    "npc_voice.contracts": "contracts",
    "npc_voice.collector": "contracts",  # the process's garbage-collection policy: standard library only
}

# layer -> the other layers it may import. Siblings (frontend/model, audio/kernels) may not
# import each other: the model takes phoneme ids, never text; audio knows no model.
ALLOWED = {
    "app": {"engine", "frontend", "model", "audio", "kernels", "contracts"},
    "engine": {"frontend", "model", "audio", "kernels", "contracts"},
    "frontend": {"contracts"},
    "model": {"audio", "kernels", "contracts"},
    "audio": {"contracts"},
    "kernels": set(),  # npc_voice_kernels imports nothing of npc_voice
    "contracts": set(),
}


def layer(module: str) -> str:
    best = max((p for p in LAYER_OF if module == p or module.startswith(p + ".")), key=len)
    return LAYER_OF[best]


@cache
def modules() -> dict[str, Path]:
    """Every module of ours: dotted name -> file."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def _resolve(name: str) -> str | None:
    """The module of ours that ``name`` (a module, or a name inside one) refers to."""
    while name:
        if name in modules():
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def imports(module: str) -> frozenset[tuple[str, int]]:
    """(module of ours imported, line) for every import statement anywhere in ``module``."""
    path = modules()[module]
    is_package = path.name == "__init__.py"
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*parent, *([base] if base else [])])
            names = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name in ``base``
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add((target, node.lineno))
    return frozenset(found)


def test_every_module_has_a_layer() -> None:
    assert len(modules()) > 50
    for module in modules():
        assert layer(module) in ALLOWED, module


def test_imports_point_down() -> None:
    upward = []
    for module in sorted(modules()):
        for target, line in sorted(imports(module)):
            here, there = layer(module), layer(target)
            if here != there and there not in ALLOWED[here]:
                where = f"{modules()[module].relative_to(ROOT)}:{line}"
                upward.append(f"{where}: {module} ({here}) imports {target} ({there})")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = {m: sorted({t for t, _ in imports(m)}) for m in modules()}
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def test_kernels_and_contracts_import_nothing_of_npc_voice() -> None:
    for module in modules():
        if layer(module) in ("kernels", "contracts"):
            outside = {t for t, _ in imports(module) if layer(t) != layer(module)}
            assert not outside, f"{module} imports {sorted(outside)}"


def test_the_checker_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    """The walk reaches every import statement, not just the module-level ones."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from npc_voice.engine import Engine\n"
        "def f():\n    from npc_voice.frontend import text_to_phonemes\n    import npc_voice.server.app\n"
    )
    tree = ast.parse(source)
    seen = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert len(seen) == 4
    assert _resolve("npc_voice.frontend.text_to_phonemes") == "npc_voice.frontend"
    assert _resolve("npc_voice.server.app.serve") == "npc_voice.server.app"
    assert layer("npc_voice.model.voice") == "model" and layer("npc_voice.cli") == "app"


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    assert [sorted(c) for c in _strongly_connected(graph) if len(c) > 1] == [["a", "b", "c"]]


def _strongly_connected(graph: dict[str, list[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.add(top)
                        if top == node:
                            break
                    out.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph.get(child, []))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out
