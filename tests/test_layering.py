"""The package's layering, checked by walking its source: imports form no cycle, no module
imports another's ``_private`` name, ``model/`` stays pure, and the lenses only depend
downwards (scenario <- model <- sim | real <- emulate <- lenses <- cli; report under lenses
and cli).

Imports are read with ``ast``, at module level and inside functions alike (an import inside
a function that dodges a cycle is still a cycle); only ``if TYPE_CHECKING:`` blocks, which
never run, are left out.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "simnet"
# What model/ may not import: processes, sockets, files, time, randomness of the run.
IMPURE = {"simpy", "subprocess", "socket", "ctypes", "shutil", "tempfile", "os", "select",
          "threading", "multiprocessing", "importlib.resources", "time", "random"}
FILE_IO = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "mkdir", "unlink"}
# The lenses and their consumers: a package may import only those on its own side or below.
ABOVE_MODEL = ("simnet.sim", "simnet.real", "simnet.emulate", "simnet.report", "simnet.cli", "simnet.lenses",
               "simnet.sweep", "simnet.conformance", "simnet.questions", "simnet.analysis",
               "simnet.planning", "simnet.strategies")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=1)
def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                skip |= {id(n) for n in ast.walk(child)}
    return skip


def imports(name: str) -> list[tuple[str, ast.ImportFrom | ast.Import]]:
    """(imported module, node) for every runtime import in a module, package-relative
    imports resolved; ``from pkg import sub`` counts as importing ``pkg.sub`` when it is one."""
    tree = modules()[name]
    skip = _type_checking_only(tree)
    known = modules()
    is_package = (PACKAGE.parent / Path(*name.split("."))).is_dir()
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, node) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            out += [(s, node) for s in subs] if subs else [(base, node)]
    return out


def graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for name in modules():
        g.add_node(name)
        for target, _ in imports(name):
            if target.startswith("simnet") and target != name:
                g.add_edge(name, target)
    return g


def test_the_import_graph_has_no_cycle():
    cycles = sorted((c for c in nx.simple_cycles(graph())), key=len)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + c[:1]) for c in cycles[:20])


def test_no_private_name_is_imported_across_modules():
    found = [f"{name}: from {target} import {a.name}"
             for name in modules() for target, node in imports(name)
             if isinstance(node, ast.ImportFrom) and target.startswith("simnet")
             for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "\n".join(found)


def model_modules() -> list[str]:
    return [n for n in modules() if n == "simnet.model" or n.startswith("simnet.model.")]


def test_model_is_pure():
    """``model/`` derives; it opens nothing: no simpy, processes, sockets or files, and none
    of the layers that consume it."""
    problems = []
    for name in model_modules():
        for target, node in imports(name):
            root = target.split(".")[0]
            if target in IMPURE or root in IMPURE or target.startswith(ABOVE_MODEL):
                problems.append(f"{name} imports {target} (line {node.lineno})")
        for node in ast.walk(modules()[name]):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if called in FILE_IO:
                    problems.append(f"{name} calls {called}() (line {node.lineno})")
    assert model_modules() and not problems, "\n".join(problems)


def test_sim_and_real_consume_the_model_and_not_each_other():
    g = graph()
    crossing = [(a, b) for a, b in g.edges
                if (a.startswith("simnet.sim") and b.startswith(("simnet.real", "simnet.report")))
                or (a.startswith("simnet.real") and b.startswith(("simnet.sim", "simnet.report")))]
    assert not crossing, crossing


def test_emulate_runs_the_real_side_and_shares_only_the_simulations_vocabulary():
    """The twin realizes and observes; it never simulates: of ``sim/`` it takes only the
    ``Metrics`` both lenses report in. Nothing below the lenses imports it."""
    g = graph()
    from_sim = {b for a, b in g.edges if a.startswith("simnet.emulate") and b.startswith("simnet.sim")}
    assert from_sim == {"simnet.sim.metrics"}, from_sim
    importers = {a for a, b in g.edges if b.startswith("simnet.emulate")
                 and not a.startswith("simnet.emulate")}
    assert importers <= {"simnet.lenses"} | {n for n in modules() if n.startswith("simnet.cli")}, importers


def test_only_the_lenses_and_the_cli_import_the_report():
    importers = {a for a, b in graph().edges if b.startswith("simnet.report")
                 and not a.startswith("simnet.report")}
    assert importers <= {"simnet.lenses"} | {n for n in modules() if n.startswith("simnet.cli")}, importers


def test_the_walk_sees_the_package():
    """The checks above would pass on nothing: make sure they read the real tree, and that the
    graph resolves what it must (a known edge, a TYPE_CHECKING import left out)."""
    g = graph()
    assert len(model_modules()) > 20 and g.number_of_edges() > 100
    assert g.has_edge("simnet.lenses", "simnet.model.deployment")
    assert g.has_edge("simnet.sim.run", "simnet.model.timeline")
    assert not g.has_edge("simnet.sim.router", "simnet.sim.run")  # type-checking only


def test_every_error_simnet_raises_has_one_root():
    """``except simnet.errors.Error`` catches anything simnet defines."""
    import importlib
    import inspect

    from simnet.errors import Error

    defined = []
    for name in modules():
        if name.startswith("simnet.conformance.test_") or name == "simnet.__main__":
            continue
        module = importlib.import_module(name)
        defined += [(name, cls) for _, cls in inspect.getmembers(module, inspect.isclass)
                    if issubclass(cls, BaseException) and cls.__module__ == name]
    strays = [f"{name}.{cls.__name__}" for name, cls in defined if not issubclass(cls, Error)]
    assert len(defined) > 8 and not strays, strays
