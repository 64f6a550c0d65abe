"""The package's imports, read from the source (AST, nothing imported): no import circle between
spin_fast modules, and every import points down the layer order

    kernels -> base (constants, recipes, config, errors, cli, atomic, geometry, render, metrics, progress, plots, mesh_io,
               video, ...) -> body, assets
            -> smplify, model, data -> fit.run -> data.synth -> train, evaluate, demo, fit, export, data's CLI

A module may import its own package and any lower layer; packages of one layer stay independent of
each other. Imports inside functions count as much as top-level ones.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. Each group is a set of modules/packages that may import each other freely (acyclically).
LAYERS = [
    [("spin_fast_kernels",)],
    [("spin_fast", "spin_fast.constants", "spin_fast.config", "spin_fast.atomic", "spin_fast.geometry",
      "spin_fast.render", "spin_fast.metrics", "spin_fast.progress", "spin_fast.plots", "spin_fast.safe_pickle",
      "spin_fast.errors", "spin_fast.cli", "spin_fast.run_lock", "spin_fast.mesh_io", "spin_fast.video",
      "spin_fast.recipes")],
    [("spin_fast.body",), ("spin_fast.assets",)],
    [("spin_fast.smplify",), ("spin_fast.model",), ("spin_fast.data",)],
    [("spin_fast.fit.run",)],       # static fits over a dataset: SMPLify on the data pipeline's labels
    [("spin_fast.data.synth",)],    # the synthetic stand-in: renders datasets, then fits them (fit.run)
    [("spin_fast.data.__main__",), ("spin_fast.train",), ("spin_fast.evaluate",), ("spin_fast.demo",), ("spin_fast.fit",), ("spin_fast.export",)],
]


def _modules() -> dict[str, Path]:
    """Every module of spin_fast and spin_fast_kernels: dotted name -> file."""
    out = {}
    for base, pkg in ((ROOT, "spin_fast"), (ROOT / "kernels", "spin_fast_kernels")):
        for path in sorted((base / pkg).rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported dotted name lands in (a name inside a module: that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported project module, line) for every import statement of the file, nested ones included."""
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]  # `from pkg import submodule` or a name
        else:
            continue
        for n in names:
            target = _resolve(n)
            if target is not None and target != module:
                found.append((target, node.lineno))
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _group(module: str) -> tuple[int, int]:
    """(layer, group) of a module: the group holding the longest prefix of its name."""
    best, best_len = None, -1
    for li, layer in enumerate(LAYERS):
        for gi, group in enumerate(layer):
            for prefix in group:
                if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                    best, best_len = (li, gi), len(prefix)
    if best is None:
        raise AssertionError(f"{module}: not in any layer of tests/test_layering.py (add it)")
    return best


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _against_the_order(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """'module:line imports target' for every import of a higher layer or of a sibling package."""
    bad = set()
    for m, edges in graph.items():
        lm, gm = _group(m)
        for t, line in edges:
            lt, gt = _group(t)
            if lt > lm or (lt == lm and gt != gm):
                bad.add(f"{m}:{line} imports {t}")
    return sorted(bad)


def test_the_scan_sees_the_package():
    assert "spin_fast.train.step" in MODULES and "spin_fast_kernels.gmm_prior.kernel" in MODULES
    assert "spin_fast_kernels.skinning" in {t for t, _ in GRAPH["spin_fast.body.model"]}
    # `from spin_fast.train import losses` lands in the module, a function-level import counts too
    assert "spin_fast.train.losses" in {t for t, _ in GRAPH["spin_fast.train.step"]}
    assert "spin_fast.data.synth" in {t for t, _ in GRAPH["spin_fast.train.loop"]}


def test_every_module_has_a_layer():
    for m in MODULES:
        _group(m)


def test_no_import_circle():
    graph = {m: sorted({t for t, _ in edges}) for m, edges in GRAPH.items()}
    assert _cycles(graph) == []


def test_imports_point_down():
    bad = _against_the_order(GRAPH)
    assert bad == [], "imports against the layer order:\n" + "\n".join(bad)


def test_the_order_check():
    graph = {"spin_fast.body.io": [("spin_fast.constants", 3), ("spin_fast.smplify.fit", 4)],
             "spin_fast.model.hmr": [("spin_fast.data.batch", 5), ("spin_fast.model.resnet", 6)],
             "spin_fast.train.step": [("spin_fast.smplify.fits", 7)]}
    assert _against_the_order(graph) == ["spin_fast.body.io:4 imports spin_fast.smplify.fit",
                                         "spin_fast.model.hmr:5 imports spin_fast.data.batch"]


@pytest.mark.parametrize("graph, circle", [
    ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, [["a", "b", "c"]]),
    ({"a": ["b"], "b": [], "c": ["a", "b"]}, []),
])
def test_the_circle_finder(graph, circle):
    assert _cycles(graph) == circle
