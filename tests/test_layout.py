"""Issue 9: one obvious place for each thing, and dependencies that run one way.

- no import cycle among orders/ modules (module-level imports; AppConfig.ready is Django's place
  for the imports that need the registry, and is excluded);
- project/ imports no app at module level (but its root URLconf);
- every module imports on its own in a fresh interpreter, in any order (here: reversed).
"""

import ast
import subprocess
import sys
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
PACKAGES = ("orders", "notifications", "project")


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in (BASE / package).rglob("*.py"):
        if "migrations" in path.parts or path.name in {"asgi.py", "wsgi.py"}:
            continue
        parts = path.relative_to(BASE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _module_level_imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported = set()
    for node in tree.body:  # module level only: a function's imports run later
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            imported.add(base)
            imported.update(f"{base}.{alias.name}" for alias in node.names)
    return imported


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    return {
        name: {dep for dep in _module_level_imports(name, path) if dep in modules and dep != name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_orders():
    graph = _graph("orders")
    # A package's __init__ re-exporting its modules is not a cycle of logic: treat each
    # submodule importing its parent package's name as importing nothing of it.
    for name, deps in graph.items():
        graph[name] = {dep for dep in deps if not name.startswith(dep + ".")}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_project_imports_no_app_at_module_level():
    """The root URLconf is where the apps are joined (STYLE: project/urls.py includes them)."""
    offenders = {
        name: sorted(
            dep
            for dep in _module_level_imports(name, path)
            if dep.split(".")[0] in {"orders", "notifications"}
        )
        for name, path in _modules("project").items()
        if name != "project.urls"
    }
    assert {name: deps for name, deps in offenders.items() if deps} == {}


def test_every_module_imports_in_a_fresh_interpreter_in_reverse_order():
    names = sorted({name for package in PACKAGES for name in _modules(package)}, reverse=True)
    script = (
        "import django, importlib, os, sys\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.settings')\n"
        "django.setup()\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *names],
        cwd=BASE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
