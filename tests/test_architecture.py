"""The house's layers, read from the source (function-level imports included): the ground floor,
adapters and pipelines never import the application or the trainers, inference never imports the
trainers, and no modules import each other in a circle."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"idgen": "idgen", "pipelines": "idgen.pipelines", "adapters": "idgen.adapters", "train": "idgen.train"}
# The application modules that run inference; only the CLI and the demo's Train tab reach the trainers.
INFERENCE_APP = ("idgen.app.generate", "idgen.app.edit", "idgen.app.restore")


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _reexports(package: str) -> dict[str, str]:
    """name -> defining submodule, for the names a package's `__init__` imports from its submodules."""
    path = MODULES.get(package)
    if path is None or path.name != "__init__.py":
        return {}
    names = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module in MODULES and node.module.startswith(package + "."):
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
    return names


def _targets(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == "idgen"}
    if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "idgen"):
        return set()
    out = set()
    reexports = _reexports(node.module)
    for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        out.add(sub if sub in MODULES else reexports.get(alias.name, node.module))
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            edges |= _targets(node)
        graph[name] = {t for t in edges if t in MODULES and t != name}
    return graph


GRAPH = _graph()


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_no_import_circles():
    """Tarjan's strongly connected components over the import graph: each must be one module."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("layer", ["ground floor", "idgen.adapters", "idgen.pipelines", "inference app"])
def test_lower_layers_never_import_the_app_or_the_trainers(layer):
    if layer == "ground floor":
        members = [m for m in GRAPH if _under(m, "idgen") and not _under(m, "idgen.app", "idgen.pipelines",
                                                                           "idgen.adapters", "idgen.train")]
        forbidden = ("idgen.app", "idgen.train")
    elif layer == "inference app":
        members = [m for m in GRAPH if _under(m, *INFERENCE_APP)]
        forbidden = ("idgen.train",)
    else:
        members = [m for m in GRAPH if _under(m, layer)]
        forbidden = ("idgen.app", "idgen.train")
    assert members
    wrong = sorted((m, t) for m in members for t in GRAPH[m] if _under(t, *forbidden))
    assert not wrong, f"{layer} imports {forbidden}: {wrong}"


def test_adapters_do_not_import_pipelines():
    wrong = sorted((m, t) for m in GRAPH if _under(m, "idgen.adapters") for t in GRAPH[m] if _under(t, "idgen.pipelines"))
    assert not wrong, f"adapters import pipelines: {wrong}"
