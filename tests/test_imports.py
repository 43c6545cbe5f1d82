"""The import graph of gradnas: no module imports itself through a chain of other gradnas modules (a static walk
of every import statement, function-level ones included), and every module imports cleanly on its own."""
import ast
import subprocess
import sys
from pathlib import Path

import gradnas

ROOT = Path(gradnas.__file__).resolve().parent


def _modules() -> dict:
    """module name -> (path, is_package) for every .py file under src/gradnas."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _resolve(name: str):
    """The module an import of ``name`` loads last: the module itself, or the package (its __init__)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _edges(module: str) -> set:
    path, is_pkg = MODULES[module]
    package = module if is_pkg else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from a import b`: b may be a submodule (an edge to it) or a name of a (an edge to a)
            targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in MODULES else prefix
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "gradnas" or target.startswith("gradnas."):
                resolved = _resolve(target)
                if resolved is not None and resolved != module:
                    out.add(resolved)
    return out


def _graph() -> dict:
    return {m: sorted(_edges(m)) for m in MODULES}


def _components(graph) -> list:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(out)


def _shortest_cycle(graph, comp) -> list:
    """A shortest cycle through the first module of ``comp`` inside the component (breadth-first)."""
    start, members = comp[0], set(comp)
    parent, queue = {start: None}, [start]
    for v in queue:
        for w in graph[v]:
            if w == start:
                path, x = [], v
                while x is not None:
                    path.append(x)
                    x = parent[x]
                return [*reversed(path), start]
            if w in members and w not in parent:
                parent[w] = v
                queue.append(w)
    return comp  # pragma: no cover - a component always has a cycle through each member


def find_cycles() -> list:
    """One shortest cycle per group of modules that import each other (strongly connected component)."""
    graph = _graph()
    return [(comp, _shortest_cycle(graph, comp)) for comp in _components(graph)]


def test_the_walk_sees_the_modules_and_their_imports():
    assert "gradnas.search.loop" in MODULES and MODULES["gradnas.space"][1]
    assert "gradnas.search.algorithm" in _edges("gradnas.search.methods")
    assert "gradnas.errors" in _edges("gradnas.registry")
    assert _resolve("gradnas.space.ops.OPS") == "gradnas.space.ops"


def test_no_import_cycles():
    cycles = find_cycles()
    assert not cycles, "import cycles in gradnas:\n" + "\n".join(
        f"  {' -> '.join(cycle)}\n    (modules that import each other: {', '.join(comp)})" for comp, cycle in cycles)


def test_every_module_imports():
    names = sorted(m for m in MODULES if m != "gradnas.__main__")  # __main__ runs the command line
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(len(sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
