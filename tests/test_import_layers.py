# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The package's import graph, read with `ast` (nothing is imported): every import goes down the data flow (files ->
decoding -> datasets -> model -> outputs -> evaluation -> report / Hub -> commands), the Hub files import only what
a Hub repo's code may, and no chain of module-level imports comes back to where it started."""

import ast
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

# Lowest first. A module may import its own layer and those below it, never one above.
LAYERS = [
    (
        "model",
        (
            "clarity_hf",
            "clarity_hf.configuration_clarity",
            "clarity_hf.modeling_clarity",
            "clarity_hf.image_processing_clarity",
            "clarity_hf.pipeline_clarity",
            "clarity_hf.xray_io",
            "clarity_hf.heatmaps",
        ),
    ),
    (
        "support",
        (
            "clarity_hf.files",
            "clarity_hf.checks",
            "clarity_hf.visualization",
            "clarity_hf.loading",
            "clarity_hf.distributed",
        ),
    ),
    ("data", ("clarity_hf.data",)),
    ("models", ("clarity_hf.baselines", "clarity_hf.convert")),
    ("inference", ("clarity_hf.inference",)),
    ("training", ("clarity_hf.training",)),
    ("evaluation", ("clarity_hf.evaluation",)),
    ("hub", ("clarity_hf.hub",)),
    ("commands", ("clarity_hf.commands", "clarity_hf.__main__")),
]
# The one upward import: the trainer reports validation AUROC with evaluation's own metric, not a copy of it.
ALLOWED_UPWARD = {("clarity_hf.training.trainer", "clarity_hf.evaluation.classification")}
HUB_FILES = LAYERS[0][1][1:]
HUB_FILE_IMPORTS = {"torch", "transformers", "numpy", "PIL"}


def package_modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of `package` under `root` (a package is named by its `__init__.py`)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _import_nodes(tree: ast.Module, module_level: bool):
    """Import statements; with `module_level`, only those run when the module is imported (not in a function,
    not under `if TYPE_CHECKING:`)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not module_level or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if module_level and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                stack.extend(node.orelse)
                continue
            stack.extend(ast.iter_child_nodes(node))


def imports(modules: dict[str, Path], name: str, module_level: bool = False) -> set[str]:
    """The modules of `modules` that `name` imports: each target (`from . import x` names the submodule `x`), and
    for module-level imports the packages Python runs on the way to it (not `name`'s own parents, already run)."""
    path = modules[name]
    is_package = path.name == "__init__.py"
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8")), module_level):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a function or attribute: its module
                target = target.rpartition(".")[0]
            if not target:
                continue
            found.add(target)
            if module_level:
                parts = target.split(".")
                found.update(
                    ".".join(parts[:i])
                    for i in range(1, len(parts))
                    if not name.startswith(".".join(parts[:i]) + ".") and name != ".".join(parts[:i])
                )
    found.discard(name)
    return found


def layer_of(name: str) -> int:
    """The index in LAYERS of the entry naming `name`: the module itself, or a sub-package holding it (the root
    package `clarity_hf` names only itself, so that a new top-level module must be placed)."""
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if name == entry or (entry != "clarity_hf" and name.startswith(entry + ".")):
                return index
    raise AssertionError(f"{name} belongs to no layer: add it to LAYERS in {Path(__file__).name}")


def upward_imports(modules: dict[str, Path]) -> list[str]:
    """Every import (lazy ones too) of a module from a layer above its own, outside ALLOWED_UPWARD."""
    found = []
    for name in modules:
        for target in sorted(imports(modules, name)):
            if layer_of(target) > layer_of(name) and (name, target) not in ALLOWED_UPWARD:
                found.append(
                    f"{name} ({LAYERS[layer_of(name)][0]}) -> {target} ({LAYERS[layer_of(target)][0]})"
                )
    return found


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """The strongly connected components with more than one module of the module-level import graph (Tarjan)."""
    graph = {name: sorted(imports(modules, name, module_level=True)) for name in modules}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return cycles


@pytest.fixture(scope="module")
def modules():
    return package_modules(REPO_ROOT, "clarity_hf")


def test_every_module_has_a_layer_and_imports_only_downward(modules):
    assert len(modules) > 50 and "clarity_hf.loading" in modules
    assert [name for name in modules if layer_of(name) is None] == []  # layer_of raises, naming the module
    assert upward_imports(modules) == []
    # The exception is still needed (else it goes from ALLOWED_UPWARD).
    assert all(target in imports(modules, name) for name, target in ALLOWED_UPWARD)


def test_no_module_level_import_cycles(modules):
    assert import_cycles(modules) == []


@pytest.mark.parametrize("name", HUB_FILES)
def test_hub_files_import_only_the_hub_libraries_at_module_level(modules, name):
    tree = ast.parse(modules[name].read_text(encoding="utf-8"))
    outside = set()
    for node in _import_nodes(tree, module_level=True):
        if isinstance(node, ast.ImportFrom) and node.level:
            continue  # a sibling: checked below through the resolved graph
        top = (node.names[0].name if isinstance(node, ast.Import) else node.module).split(".")[0]
        if top not in HUB_FILE_IMPORTS and top not in sys.stdlib_module_names:
            outside.add(top)
    assert outside == set()
    assert imports(modules, name, module_level=True) <= set(HUB_FILES)


def test_the_checks_find_an_upward_import_and_a_cycle(tmp_path):
    """The walker on a planted package: relative imports of both kinds resolve, a lazy upward import is found,
    and a cycle through a package `__init__` is found."""
    files = {
        "clarity_hf/__init__.py": "",
        "clarity_hf/files.py": "def f():\n    from .hub import cards\n",
        "clarity_hf/data/__init__.py": "from . import cache\n",
        "clarity_hf/data/cache.py": "from ..files import f\nimport clarity_hf.data.features\n",
        "clarity_hf/data/features.py": "from .. import data\n",
        "clarity_hf/hub/__init__.py": "",
        "clarity_hf/hub/cards.py": "from ..data.cache import f\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    planted = package_modules(tmp_path, "clarity_hf")
    with pytest.raises(AssertionError, match="clarity_hf.new_module belongs to no layer"):
        layer_of("clarity_hf.new_module")
    assert imports(planted, "clarity_hf.hub.cards") == {"clarity_hf.data.cache"}
    assert imports(planted, "clarity_hf.hub.cards", module_level=True) == {
        "clarity_hf.data.cache",
        "clarity_hf.data",
    }
    assert upward_imports(planted) == ["clarity_hf.files (support) -> clarity_hf.hub.cards (hub)"]
    assert import_cycles(planted) == [
        ["clarity_hf.data", "clarity_hf.data.cache", "clarity_hf.data.features"]
    ]
