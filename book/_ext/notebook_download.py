"""Offer every chapter as an executed .ipynb download, without launch buttons.

sphinx-book-theme copies the executed notebook of a MyST Markdown page into
``_sources/`` (so its download menu lists ".ipynb") only when a launch service
is configured, and then also draws a launch button whose link points at a
repository this book does not have. This extension runs after the theme and
removes that launch button, keeping the notebook download.
"""


def _drop_launch_buttons(app, pagename, templatename, context, doctree):
    buttons = context.get("header_buttons")
    if buttons:
        buttons[:] = [b for b in buttons if b.get("label") != "launch-buttons"]


def setup(app):
    app.connect("html-page-context", _drop_launch_buttons, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
