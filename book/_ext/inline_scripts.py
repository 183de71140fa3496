"""Write each inline script once per page (a Sphinx 7 duplication).

An extension that calls ``app.add_js_file(None, body=...)`` after the HTML builder
is set up (sphinx-thebe does, for ``const THEBE_JS_URL = ...``; sphinx-togglebutton
too) registers the script twice: with the builder as filename ``None``, and in the
registry, which ``prepare_writing`` adds again as filename ``''``. The two do not
compare equal, so every page carried the script twice, and the browser stopped at
the second ``const`` ("Identifier 'THEBE_JS_URL' has already been declared").
Before writing starts, this turns the builder's ``None`` into ``''``, so the second
addition finds the first and is dropped.
"""
from sphinx.builders.html._assets import _JavaScript


def normalize_inline_scripts(app, env):
    files = getattr(app.builder, "_js_files", None)
    if files is None:  # not an HTML builder
        return
    files[:] = [_JavaScript("", priority=js.priority, **js.attributes) if js.filename is None
                else js for js in files]


def setup(app):
    app.connect("env-updated", normalize_inline_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
