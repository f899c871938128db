"""The package's imports run one way: no cycle, no private name across modules, layers respected.

The layers, lowest first, are the import order of docs/how-it-works.md: a module imports from its
own layer or a lower one. Imports under ``if TYPE_CHECKING:`` are for annotations only and count
for nothing; an import inside a function counts like any other, except the one deliberate lazy
import of the package (``Workflow.start`` imports the engine) and the app config's ``ready()``,
where Django wants the models and signal receivers imported.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "durable_django"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

LAYERS: list[set[str]] = [
    {"exceptions", "conf", "signals", "tracing"},
    {"capture", "context", "results", "retry", "nodes", "definition", "waits", "logging", "schedules", "deadlines"},
    {"models"},
    {"leases", "attempts"},
    {"dispatch", "counters", "presence", "schedule_jobs", "timer_jobs"},
    {"store"},
    {"join", "items", "batches"},
    {"blocks"},
    {"engine"},
    {"firing", "jobs", "recovery", "operations", "children", "resume", "compensation", "retention", "doctor", "timers"},
    {"forks", "bulk"},
    {
        "checks",
        "testing",
        "timeaxis",
        "admin_items",
        "admin_logs",
        "timeparts",
        "timeline",
        "flowparts",
        "flowgraph",
        "flowsvg",
        "admin_run",
        "admin_display",
        "admin_lists",
        "admin_delete",
        "admin_columns",
        "admin_bulk",
        "admin_forks",
        "answer_forms",
        "admin_waits",
        "admin_inbox",
        "admin_schedules",
        "admin",
        "api",
        "metrics",
        "management",
        "worker",
        "apps",
        PACKAGE,
    },
]

# (importing module, imported module): lazy imports that are there on purpose.
# The metrics view imports its collector (and so prometheus_client, an optional dependency) when served.
DELIBERATE_LAZY = {
    ("definition", "engine"),
    ("testing", "models"),
    ("testing", "conf"),
    ("metrics.views", "metrics.collector"),
}


@dataclass(frozen=True)
class Edge:
    source: str  # dotted module name without the package, "" for the package itself
    target: str
    names: tuple[str, ...]
    lazy: bool
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in sorted(ROOT.rglob("*.py"))
        if "migrations" not in path.relative_to(ROOT).parts
    }


def _resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module (relative to the package) that ``from ... import`` names, for relative and absolute forms."""
    if node.level == 0:
        module = node.module or ""
        return module.removeprefix(PACKAGE).lstrip(".") if module.split(".")[0] == PACKAGE else "<outside>"
    base = source.split(".") if source else []
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, *(node.module.split(".") if node.module else [])])


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def edges() -> list[Edge]:
    known = modules()
    found: list[Edge] = []
    for source, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"

        def visit(node: ast.AST, lazy: bool, source: str = source, is_package: bool = is_package) -> None:
            if isinstance(node, ast.If) and _type_checking_only(node):
                for child in node.orelse:
                    visit(child, lazy)
                return
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lazy = True
            if isinstance(node, ast.ImportFrom):
                target = _resolve(source, is_package, node)
                if target != "<outside>":
                    names = tuple(alias.name for alias in node.names)
                    submodules = [name for name in names if f"{target}.{name}".lstrip(".") in known]
                    for name in submodules:
                        found.append(Edge(source, f"{target}.{name}".lstrip("."), (), lazy, node.lineno))
                    others = tuple(name for name in names if name not in submodules)
                    if others:
                        found.append(Edge(source, target, others, lazy, node.lineno))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        found.append(Edge(source, alias.name.removeprefix(PACKAGE).lstrip("."), (), lazy, node.lineno))
            for child in ast.iter_child_nodes(node):
                visit(child, lazy)

        visit(tree, False)
    return found


def counted(edge: Edge) -> bool:
    if not edge.lazy:
        return True
    return (edge.source, edge.target) not in DELIBERATE_LAZY and edge.source != "apps"


def layer_of(module: str) -> int:
    top = module.split(".")[0] if module else PACKAGE
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{PACKAGE}.{module} is in no layer of tests/test_layout.py: add it to one")


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_no_module_imports_a_private_name_of_another() -> None:
    private = [
        f"{PACKAGE}.{edge.source or '__init__'}:{edge.line} imports {name} from {PACKAGE}.{edge.target}"
        for edge in edges()
        for name in edge.names
        if name.startswith("_") and name != "__version__" and edge.target != edge.source
    ]
    assert private == []


def test_imports_go_down_the_layers() -> None:
    upward = [
        f"{PACKAGE}.{edge.source or '__init__'}:{edge.line} imports {PACKAGE}.{edge.target or '__init__'}"
        for edge in edges()
        if counted(edge) and layer_of(edge.target) > layer_of(edge.source)
    ]
    assert upward == []


def test_there_is_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for edge in edges():
        if counted(edge) and edge.target != edge.source:
            graph.setdefault(edge.source, set()).add(edge.target)
    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert cycles == []


def test_the_deliberate_lazy_imports_are_the_only_ones() -> None:
    lazy = sorted(
        {(edge.source, edge.target) for edge in edges() if edge.lazy and edge.source != "apps"} - DELIBERATE_LAZY
    )
    assert lazy == []


@pytest.mark.parametrize("module", sorted(modules()))
def test_modules_stay_small_enough_to_read_in_one_sitting(module: str) -> None:
    lines = modules()[module].read_text().count("\n")
    assert lines <= 550, f"{PACKAGE}.{module} has {lines} lines; split it by concern"
