"""The library's layout: small modules, no import circles, apps on top.

Read from the source with `ast` (nothing is imported): every module of
`painless_tf/` stays under 800 lines, the imports between its modules form
no circle, and nothing in the library imports `apps/` or `bench/`.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = os.path.join(ROOT, "painless_tf")
MAX_LINES = 800


def _modules():
    """{dotted name: path} of every module of the library."""
    found = {}
    for folder, _, files in os.walk(LIBRARY):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path, modules):
    """The library modules (and top-level packages) `path` imports."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            # `from painless_tf import data`: a module, not a name in one.
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in modules)
    return names


def test_no_module_is_over_800_lines():
    long = {}
    for name, path in _modules().items():
        with open(path, encoding="utf-8") as f:
            count = sum(1 for _ in f)
        if count > MAX_LINES:
            long[name] = count
    assert not long, f"split these along their concerns: {long}"


def test_the_library_imports_no_app_or_benchmark():
    modules = _modules()
    for name, path in modules.items():
        wrong = {i for i in _imports(path, modules)
                 if i.split(".")[0] in ("apps", "bench", "tests")}
        assert not wrong, (name, wrong)


def test_the_imports_between_library_modules_form_no_circle():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        graph[name] = {
            i for i in _imports(path, modules)
            # A package's __init__ re-exports its submodules: importing a
            # submodule runs it, which is no edge back up.
            if i in modules and i != name and not name.startswith(i + ".")
        }
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circle = trail[trail.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert len(graph) > 40  # every module was read
