"""The house rules the code's layout keeps: a serving core that never imports the laboratory and has no import
cycle, an app that sees the core only through its public face, a Space that carries no laboratory, short files."""
from __future__ import annotations

import ast
from pathlib import Path

import mga
from mga.config import PROJECT_ROOT
from ui.space import space_files

PACKAGES = ("mga", "training", "index_builder", "ui", "bench")
MAX_LINES = 300


def imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every `import` and `from ... import` of a file; a relative import's module is named
    from its package (`from . import x` gives `x`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level and not node.module:
                found += [(node.level, a.name) for a in node.names]
            else:
                found.append((node.level, node.module or ""))
    return found


def test_the_serving_core_imports_no_other_package_of_the_project_and_has_no_cycle():
    graph = {}
    for path in sorted((PROJECT_ROOT / "mga").glob("*.py")):
        deps = set()
        for level, module in imports(path):
            top = module.split(".")[0]
            assert level or top not in PACKAGES[1:], f"mga/{path.name} imports {module}"
            if level:
                deps.add(top)
            elif top == "mga" and "." in module:
                deps.add(module.split(".")[1])
        graph[path.stem] = deps - {"__init__"}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(trail[trail.index(dep):] + [dep])
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert len(graph) > 30


def test_the_app_sees_the_core_only_through_its_public_face():
    for path in [PROJECT_ROOT / "app.py", *sorted((PROJECT_ROOT / "ui").glob("*.py"))]:
        for level, module in imports(path):
            assert not module.startswith(("mga.", "training", "bench", "index_builder")), \
                f"{path.name} imports {module}: the app imports `from mga import ...` only"
    assert set(mga.__all__) <= set(dir(mga)) and "SearchEngine" in mga.__all__


def test_a_space_carries_the_serving_core_and_no_laboratory():
    files = space_files()
    assert "app.py" in files and "mga/search.py" in files and "mga/ranking.py" in files
    assert not [f for f in files if f.startswith(("training/", "bench/", "tests/", "index_builder/", "docs/"))]


def test_no_file_outside_the_tests_is_longer_than_the_house_rule():
    long = {str(p.relative_to(PROJECT_ROOT)): n for pkg in PACKAGES for p in (PROJECT_ROOT / pkg).glob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    app = len((PROJECT_ROOT / "app.py").read_text().splitlines())
    assert not long and app <= MAX_LINES, long
