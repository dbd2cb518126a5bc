"""dl's imports go one way: every import of one dl module by another, at the top or
inside a function, is an edge, and the graph has no cycle."""

import ast
import subprocess
import sys
from pathlib import Path

import dl

ROOT = Path(dl.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _package(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _targets(name: str, node) -> set[str]:
    """The dl modules an import statement loads (the deepest existing module named)."""
    found = set()
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative import
            pkg = _package(name).split(".")
            base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
        candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
    for cand in candidates:
        while cand and cand not in MODULES:
            cand = cand.rpartition(".")[0]
        if cand:
            found.add(cand)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _targets(name, node)
        # A package's own __init__ importing its submodules, and a submodule importing
        # siblings through its package, are how packages work, not cycles of design.
        edges = {
            t
            for t in edges
            if t != name
            and not (MODULES[t].name == "__init__.py" and name.startswith(t + "."))
            and not (MODULES[name].name == "__init__.py" and t.startswith(name + "."))
        }
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_finder_sees_a_cycle_and_imports_inside_functions():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("def f():\n    from dl.train import fit\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert _targets("dl.models.cnn", node) == {"dl.train"}


def test_dl_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_models_check_neither_backend_nor_environment():
    for path in (ROOT / "models").rglob("*.py"):
        text = path.read_text()
        for needle in ("default_backend", "os.environ", "getenv", "jax.devices", "platform"):
            assert needle not in text, f"{path.name} uses {needle}"
    graph = import_graph()
    for name, edges in graph.items():
        if name.startswith("dl.models"):
            allowed = {"dl._errors", "dl.kernels"} | {
                m for m in MODULES if m.startswith("dl.models")
            }
            assert edges <= allowed, f"{name} imports {sorted(edges - allowed)}"


_SIDE_EFFECTS = """
import ctypes, sys
calls = []
real = ctypes.CDLL
class Spy:
    def __init__(self, lib):
        self._lib = lib
    def __getattr__(self, name):
        if name == "mallopt":
            calls.append(name)
        return getattr(self._lib, name)
ctypes.CDLL = lambda *a, **k: Spy(real(*a, **k))
import dl, dl.train, dl.models
from dl.kernels import host_allocator_tuned
assert not host_allocator_tuned(), "malloc was tuned by an import"
assert not calls, calls
for name in dl._SUBMODULES:
    assert getattr(dl, name).__name__ == "dl." + name
print("ok")
"""


def test_import_dl_leaves_malloc_alone_and_reaches_every_submodule():
    out = subprocess.run(
        [sys.executable, "-c", _SIDE_EFFECTS], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


# The layers of ARCHITECTURE.md, lowest first: a module imports only from its own layer
# or lower ones.
LAYERS = [
    ("dl._errors", "dl._progress", "dl.plotting", "dl.rundir", "dl.writers"),
    ("dl.data",),
    ("dl.kernels",),
    ("dl.models",),
    ("dl.losses", "dl.optim", "dl.metrics", "dl.generative", "dl.selfsup"),
    ("dl.step",),
    ("dl.parallel", "dl.checkpoint"),
    ("dl.train", "dl.elm"),
    ("dl.gan", "dl.analysis", "dl.adversarial"),
    ("dl.recipes",),
    ("dl.baselines",),
    ("dl.experiments", "dl.notebook"),
    ("dl.cli",),
]


def _layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer of LAYERS")


def test_imports_go_from_higher_layers_to_lower_ones():
    graph = import_graph()
    for name, edges in graph.items():
        if name == "dl":
            continue
        for target in edges:
            assert _layer(target) <= _layer(name), f"{name} imports {target}, a higher layer"
