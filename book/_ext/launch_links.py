"""Point each chapter's Colab button at a real notebook of that chapter.

sphinx-book-theme builds every launch link from the page's source file in the
repository (``_config.yml``: ``repository`` and ``launch_buttons``). For this
book's chapters that file is MyST Markdown, ``book/NN_name.md``:

* Binder can open it: the Binder image installs ``requirements.txt`` (jupytext
  among it), and the repository's ``postBuild`` makes "Jupytext Notebook" the
  default viewer of Markdown files, so the link opens the chapter as a notebook.
* Colab cannot: it opens only ``.ipynb`` files on GitHub. The book workflow
  (``.github/workflows/book.yml``) therefore writes every chapter as
  ``notebooks/NN_name.ipynb`` with ``make notebooks`` and pushes those files to
  the branch ``colab_notebooks_branch``. This extension replaces the theme's
  Colab link of a chapter page with the link to that notebook, and removes the
  Colab button from pages that have no notebook there (pages outside
  ``colab_notebooks_pages``).

The theme also copies the executed notebook into ``_sources/`` so that the
download menu offers ``.ipynb``; that is untouched.
"""
from fnmatch import fnmatchcase
from urllib.parse import urlsplit


def colab_url(colab, repository_url, branch, directory, pagename):
    """The Colab link of the notebook ``<directory>/<page stem>.ipynb`` on ``branch`` of
    the repository."""
    parts = urlsplit(repository_url)
    if parts.netloc != "github.com":
        raise ValueError("Colab opens notebooks from GitHub only; the repository is "
                         f"{repository_url!r}")
    org, repo = parts.path.strip("/").removesuffix(".git").split("/")[:2]
    stem = pagename.rsplit("/", 1)[-1]
    path = "/".join(part for part in (directory.strip("/"), f"{stem}.ipynb") if part)
    return f"{colab.rstrip('/')}/github/{org}/{repo}/blob/{branch}/{path}"


def rewrite_colab_button(header_buttons, pagename, config, theme_options):
    """Rewrite (or drop) the Colab entry of the theme's launch-button group, in place."""
    colab = theme_options.get("launch_buttons", {}).get("colab_url")
    for group in header_buttons:
        if group.get("label") != "launch-buttons":
            continue
        for button in list(group["buttons"]):
            if button.get("text") != "Colab":
                continue
            if colab and fnmatchcase(pagename, config.colab_notebooks_pages):
                button["url"] = colab_url(colab, theme_options["repository_url"],
                                          config.colab_notebooks_branch, config.colab_notebooks_dir,
                                          pagename)
            else:
                group["buttons"].remove(button)


def _on_page_context(app, pagename, templatename, context, doctree):
    buttons = context.get("header_buttons")
    if buttons:
        rewrite_colab_button(buttons, pagename, app.config, app.config.html_theme_options)


def setup(app):
    app.add_config_value("colab_notebooks_branch", "notebooks", "html")
    app.add_config_value("colab_notebooks_dir", "notebooks", "html")
    app.add_config_value("colab_notebooks_pages", "book/[0-9]*", "html")
    # after sphinx-book-theme's add_launch_buttons (default priority 500) has built the group
    app.connect("html-page-context", _on_page_context, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
