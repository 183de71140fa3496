"""The package's layout: no import cycle, each role imports only what it may (course/layout.py)."""
import textwrap

import pytest

from attention_scratch.course.layout import ROLES, find_cycles, import_graph, role_graph, role_of

GRAPH = import_graph()


def test_the_package_has_no_import_cycle():
    assert find_cycles(GRAPH) == []


def test_a_cycle_is_found_wherever_its_imports_stand(tmp_path):
    """The walker sees imports inside functions and modules named in a registry,
    and a cycle through them."""
    pkg = tmp_path / "attention_scratch"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from . import b\n",
        "b.py": "from .sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": 'REGISTRY = {"x": "attention_scratch.a"}\n',
        "d.py": 'if __name__ == "__main__":\n    from . import e\n',
        "e.py": "from . import d\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    graph = import_graph(pkg)
    assert graph["attention_scratch.a"].imports == {"attention_scratch.b"}
    assert graph["attention_scratch.sub.c"].imports == {"attention_scratch.a"}
    assert graph["attention_scratch.d"].imports == set()  # a __main__ block is never imported
    assert find_cycles(graph) == [["attention_scratch.a", "attention_scratch.b",
                                   "attention_scratch.sub.c"]]


def test_every_module_has_a_role_and_the_roles_are_layered():
    roles, edges = role_graph(GRAPH)
    assert set(roles) <= {role for role, _ in ROLES} | {role_of("attention_scratch.softmax")}
    allowed = {  # role -> the roles it may import
        "contract": set(),
        "backends: Numba": {"contract"},
        "backends: CUDA": {"contract"},
        "backend dispatch": {"contract", "backends: Numba", "backends: CUDA"},
        "concepts (one per chapter)": {"contract", "backend dispatch"},
        "training": {"concepts (one per chapter)"},
        "demos": {"concepts (one per chapter)"},
        "benchmarks": {"concepts (one per chapter)", "backend dispatch", "backends: CUDA",
                       "contract"},
        "course tooling": {"concepts (one per chapter)", "contract"},
    }
    for (source, target), count in edges.items():
        assert target in allowed[source], f"{source} imports {target} ({count} imports)"


@pytest.mark.parametrize("concept", ["sdpa", "decoding", "variants", "io_accounting", "flash"])
def test_no_chapter_gets_its_arguments_validated_by_another_chapter(concept):
    imports = GRAPH[f"attention_scratch.{concept}"].imports
    assert "attention_scratch.contract" in imports
    assert imports.isdisjoint({"attention_scratch.sdpa", "attention_scratch.decoding",
                               "attention_scratch.variants"}), imports


def test_scaled_dot_product_attention_does_not_depend_on_the_flash_chapter():
    assert {"attention_scratch.flash", "attention_scratch.flash_tiles"}.isdisjoint(
        GRAPH["attention_scratch.sdpa"].imports)
