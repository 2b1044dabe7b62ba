"""The package map of ``docs/architecture.md`` holds in the code: every import runs down the floors, none in a circle.

Imports are read from the source (``ast``), those inside functions (a lazy import is an arrow too) and those under
``if TYPE_CHECKING:`` included (an annotation that needs a module above or around it is a circle in the design).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nnunetv2_mednext"

# floor of each room (a sub-package or a top-level module); an import may go to the same or a lower floor only
FLOORS = {
    "errors": 0, "envflags": 0, "fsutil": 0, "image_io": 0, "versions": 0, "_timm_hook": 0, "__init__": 0,
    "networks": 1,
    "evaluation": 2, "conversion": 2, "classification": 2,
    "nnunet": 3,
    "doctor": 4,
    "cli": 5, "__main__": 5,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports (resolved to the longest known module name)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
                targets = [f"nnunetv2_mednext.{prefix}.{a.name}".rstrip(".") for a in node.names]
            elif node.module:
                targets = [f"{node.module}.{a.name}" for a in node.names]
        for t in targets:
            if not t.startswith("nnunetv2_mednext."):
                continue
            parts = t.split(".")[1:]
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts:
                found.add(".".join(parts))
    found.discard(name)
    return found


def _room(module: str) -> str:
    return module.split(".")[0]


def test_every_import_runs_down_the_floors_and_none_in_a_circle() -> None:
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    assert set(map(_room, modules)) <= set(FLOORS), f"rooms without a floor: {set(map(_room, modules)) - set(FLOORS)}"
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if FLOORS[_room(b)] > FLOORS[_room(a)]]
    assert not upward, "imports running back up:\n" + "\n".join(upward)

    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(n):], n]))
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_networks_import_nothing_from_nnunet() -> None:
    for path in (PACKAGE / "networks").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.startswith(("nnunetv2.", "dynamic_network_architectures")) or n == "nnunetv2"], path


def test_no_module_over_600_lines() -> None:
    big = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert not big, big
