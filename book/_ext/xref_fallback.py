"""Resolve the library's short cross-references in docstrings (``:func:`flash_attention```).

The docstrings name functions and classes the way a reader of the code does: by their
short name (``:class:`TinyTransformer```) or by a path that is not where the API page
documents them (``:func:`attention_scratch.merge_attention```, documented under
``attention_scratch.online_softmax``). Sphinx's Python domain looks such names up
exactly, in the current module only, and leaves them as unlinked code. When that exact
lookup fails, this looks the last component of the name up among everything the book
documents and links the reference when the choice is clear: the one object of that
name, else the one re-exported at the top of the package (``attention_scratch.<name>``),
else the method of the class whose docstring holds the reference, else the one in the
package of the module whose docstring holds it. A name
that still does not resolve stays unlinked code, as before.
"""
from sphinx.util.nodes import make_refnode

PACKAGE = "attention_scratch"
ROLES = {"func": ("function", "method"), "meth": ("method", "function"),
         "class": ("class", "exception"), "exc": ("exception", "class"),
         "mod": ("module",), "data": ("data", "attribute"), "attr": ("attribute", "data"),
         "obj": ("function", "class", "method", "data", "attribute", "exception", "module")}


def _candidates(domain, name, types):
    """Documented objects whose dotted name ends with ``name``'s last component."""
    short = name.rpartition(".")[2]
    return [(full, obj) for full, obj in domain.objects.items()
            if (full == short or full.endswith("." + short)) and obj.objtype in types
            and not obj.aliased]


def _choose(found, name, context, cls=None):
    """The one candidate the reference clearly means, or None."""
    if len(found) == 1:
        return found[0]
    short = name.rpartition(".")[2]
    member = [c for c in found if cls and c[0] == f"{context}.{cls}.{short}"]
    if member:  # a method named inside its own class's docstring
        return member[0]
    top = [c for c in found if c[0] == f"{PACKAGE}.{short}"]
    if len(top) == 1:
        return top[0]
    package = (context or "").rpartition(".")[0]
    near = [c for c in found if package and c[0].startswith(package + ".")]
    return near[0] if len(near) == 1 else None


def resolve_short_names(app, env, node, contnode):
    if node.get("refdomain") != "py" or node.get("reftype") not in ROLES:
        return None
    target = node["reftarget"].lstrip(".~")
    domain = env.get_domain("py")
    choice = _choose(_candidates(domain, target, ROLES[node["reftype"]]), target,
                     node.get("py:module"), node.get("py:class"))
    if choice is None:
        return None
    full, obj = choice
    return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, full)


def setup(app):
    app.connect("missing-reference", resolve_short_names)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
