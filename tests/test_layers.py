"""The house's arrows point one way: the CLI and the web app call the core, never the reverse,
and no module of the package imports itself back through another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "newsletter"
# The two front doors, and the web app's logging set-up that only `serve` uses.
FRONT = {"newsletter.cli", "newsletter.web", "newsletter.weblog", "newsletter.__main__"}
FRAMEWORKS = ("typer", "click", "starlette", "uvicorn", "rich")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports anywhere: at the top, inside functions, under TYPE_CHECKING."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _graph() -> dict[str, set[str]]:
    return {
        name: {m for m in imports if m in MODULES and m != name}
        for name, imports in MODULES.items()
    }


@pytest.mark.parametrize("module", sorted(set(MODULES) - FRONT))
def test_the_core_never_imports_the_cli_the_web_app_or_their_frameworks(module):
    imports = MODULES[module]
    assert not imports & FRONT, f"{module} imports {sorted(imports & FRONT)}"
    frameworks = {m for m in imports if m.split(".")[0] in FRAMEWORKS}
    assert not frameworks, f"{module} imports {sorted(frameworks)}"


@pytest.mark.parametrize("module", sorted(set(MODULES) - FRONT))
def test_the_core_never_prints_or_exits(module):
    path = PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py")
    if not path.exists():
        path = path.with_suffix("") / "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            assert called not in ("print", "sys.exit", "exit", "quit"), f"{module}: {called}()"


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, as a path that ends where it starts; None if there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_no_import_circle():
    circle = _circle(_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_a_circle_is_found_where_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circle(graph) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": set()}) is None
    # The real graph is read: the store's package imports its modules.
    assert "newsletter.db.sends" in _graph()["newsletter.db"]
