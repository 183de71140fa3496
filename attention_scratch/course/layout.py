"""The package's layout read from its source: modules, roles and the imports between them.

:func:`import_graph` parses every module of ``attention_scratch`` (nothing is imported)
and records which package modules each one imports, wherever the ``import`` statement
stands: at the top, inside a function, or as a module name handed to
``importlib.import_module`` in a registry (the backend dispatch). Code under
``if __name__ == "__main__":`` runs only when the module is the program, never when it
is imported, so it cannot take part in an import cycle and is left out.
:func:`find_cycles` lists the cycles (``tests/test_layout.py`` fails on any), and
:func:`role_graph` groups the modules by role for the picture of the contributor page
(``docs/layout_figure.py`` draws it).
"""
import ast
import dataclasses
from pathlib import Path

from .repo import PACKAGE_DIR

# The roles of the package, in the order the picture stacks them (a module's role is the
# first whose prefix matches its dotted name relative to the package).
ROLES = (
    ("course tooling", ("course", "grade")),
    ("benchmarks", ("bench",)),
    ("training", ("training",)),
    ("demos", ("demos",)),
    ("backends: CUDA", ("backends.cuda",)),
    ("backends: Numba", ("backends.numba",)),
    ("backend dispatch", ("backends",)),
    ("contract", ("contract", "bands", "_checks", "_nonfinite")),
)
DEFAULT_ROLE = "concepts (one per chapter)"


@dataclasses.dataclass(frozen=True)
class Module:
    """One module: its dotted name, file, whether it is a package's ``__init__``,
    and its imports."""

    name: str
    path: Path
    is_package: bool
    imports: frozenset


def _module_names(package_dir):
    """``{dotted name: (path, is_package)}`` for every ``.py`` file of the package."""
    package_dir = Path(package_dir)
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        names[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return names


def _is_main_guard(node):
    """True for ``if __name__ == "__main__":``."""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _nodes(tree):
    """Every node of ``tree`` except those under an ``if __name__ == "__main__":`` block."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_main_guard(node):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(target, names):
    """The package module that importing ``target`` loads (the longest known prefix), or None."""
    while target and target not in names:
        target = target.rpartition(".")[0]
    return target or None


def _imports_of(name, path, is_package, names, root):
    """The package modules that module ``name`` imports (see the module docstring)."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    docstrings = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            docstrings.add(id(body[0].value))
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in names else module
                       for alias in node.names]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings and node.value in names
              and node.value.startswith(root + ".")):
            targets = [node.value]  # a registry entry: a module imported by name
        else:
            continue
        for target in targets:
            resolved = _resolve(target, names) if target.split(".")[0] == root else None
            if resolved and resolved != name:
                found.add(resolved)
    return frozenset(found)


def import_graph(package_dir=PACKAGE_DIR):
    """``{dotted name: Module}`` for every module of the package,
    with the package modules it imports."""
    names = _module_names(package_dir)
    root = Path(package_dir).name
    return {name: Module(name, path, is_package, _imports_of(name, path, is_package, names, root))
            for name, (path, is_package) in names.items()}


def find_cycles(graph):
    """The import cycles of ``graph``: a list of sorted lists of module names (strongly connected
    components with more than one module, or a module importing itself)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):  # Tarjan's algorithm, recursive: the package is a few dozen modules deep at most
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v].imports):
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
            if len(component) > 1 or v in graph[v].imports:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def role_of(name):
    """The role of a module (its dotted name, ``attention_scratch.`` included or not)."""
    relative = name.split(".", 1)[1] if "." in name else ""
    for role, prefixes in ROLES:
        if any(relative == p or relative.startswith(p + ".") for p in prefixes):
            return role
    return DEFAULT_ROLE


def role_graph(graph):
    """``(roles, edges)``: the modules of each role, and ``{(from role, to role): import count}``
    between different roles."""
    roles = {}
    for name in graph:
        roles.setdefault(role_of(name), []).append(name)
    edges = {}
    for name, module in graph.items():
        for target in module.imports:
            pair = (role_of(name), role_of(target))
            if pair[0] != pair[1]:
                edges[pair] = edges.get(pair, 0) + 1
    return {role: sorted(mods) for role, mods in roles.items()}, edges
