"""The shape of core/: no import cycle among its modules, no UI or cluster library inside it, torch kept out of the
app's import, and no module or function grown past what one reader takes in."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import ROOT

CORE = ROOT / "core"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80


def _parse(text: str) -> ast.AST:
    """``ast.parse``, once more after CPython 3.11's "AST constructor recursion depth mismatch": its AST recursion
    counter is shared by all threads, and an earlier test's thread stopped by an asynchronous exception (the map's
    Stop) can leave it off by some; the failing call resets it."""
    try:
        return ast.parse(text)
    except SystemError:
        return ast.parse(text)


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str] = frozenset()):
    """Every module named by an import anywhere in ``tree`` (inside functions too), except under ``if TYPE_CHECKING:``:
    those only name types for annotations, never run, so they order nothing at import time. ``from package import
    name`` names the submodule when ``name`` is one of ``modules``, else the package."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for a in node.names:
                yield f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base


def core_graph() -> dict[str, set[str]]:
    """core's modules -> the core modules each imports. A module naming its own package (``core.faces.detect`` takes
    ``geometry`` from ``core.faces``) is no edge: the package is always initialised before its submodules."""
    paths = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        deps = set()
        for imported in _imports(_parse(path.read_text()), name, path.name == "__init__.py", set(paths)):
            if imported in paths and not name.startswith(f"{imported}."):
                deps.add(imported)
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    tree = ast.parse("def f():\n    from core.b import x\n\nif TYPE_CHECKING:\n    from core.c import y\n")
    assert set(_imports(tree, "core.a", False)) == {"core.b"}
    assert find_cycle({"core.a": {"core.b"}, "core.b": {"core.c"}, "core.c": {"core.a"}}) == [
        "core.a", "core.b", "core.c", "core.a"]
    assert find_cycle({"core.a": {"core.b"}, "core.b": set()}) is None


def test_no_import_cycle_in_core():
    graph = core_graph()
    assert "core.projection" in graph and "core.model" in graph["core.projection"]  # the graph is really read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in core: " + " -> ".join(cycle)


def test_engines_sit_below_the_workflows():
    graph = core_graph()
    for engine in ("core.projection", "core.pivotal", "core.model"):
        assert "core.photo_to_latent" not in graph[engine] and "core.executor" not in graph[engine], engine
    assert {"core.executor", "core.projection", "core.pivotal"} <= graph["core.photo_to_latent"]


def test_core_imports_no_ui_or_cluster_library():
    for path in CORE.rglob("*.py"):
        tree = _parse(path.read_text())
        roots = {name.split(".")[0] for name in _imports(tree, _module_name(path), path.name == "__init__.py")}
        assert not roots & {"gradio", "gradio_client", "ray", "demos"}, path


def _unexplained_lengths(folder) -> list[str]:
    """Files over MAX_FILE_LINES whose module docstring has no paragraph "Why one file ...", and functions over
    MAX_FUNCTION_LINES named neither in a "Why ..." paragraph of it nor with "over 80 lines" in their own docstring."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        text = path.read_text()
        tree = _parse(text)
        why = " ".join(para for para in (ast.get_docstring(tree) or "").split("\n\n") if para.startswith("Why"))
        if text.count("\n") > MAX_FILE_LINES and "Why one file" not in why:
            found.append(str(path.relative_to(ROOT)))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                if f"``{node.name}``" not in why and f"over {MAX_FUNCTION_LINES} lines" not in (ast.get_docstring(node) or "").lower():
                    found.append(f"{path.relative_to(ROOT)}:{node.name}")
    return found


def test_core_files_and_functions_stay_readable():
    long_files, long_functions = [], []
    for path in CORE.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(path.name)
        for node in ast.walk(_parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.name}:{node.name}")
    assert not long_files and not long_functions, (long_files, long_functions)


def test_long_files_and_functions_elsewhere_say_why():
    """demos/ and plugins/ may keep a file or function past the limits only with one sentence saying why."""
    assert _unexplained_lengths(ROOT / "demos") + _unexplained_lengths(ROOT / "plugins") == []


def test_the_app_module_imports_without_torch():
    """Serving the first page waits for ``import demos.app``: torch (seconds to import) must not be part of it."""
    code = "import sys, demos.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
