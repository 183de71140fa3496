"""What the published book and the notebooks made from it rely on.

The repository URL is written once, in pyproject.toml; _config.yml (repository,
edit, issue and launch buttons) must name the same. The workflows build and
deploy what the configuration promises (the notebooks branch behind the Colab
buttons). A chapter runs as a notebook from any folder (``notebooks/``, Colab,
Binder), so it finds its data through the installed package, never through the
working directory.
"""
import fnmatch
import importlib.util
import os
import re
from importlib.resources import files

import pytest
import yaml

from attention_scratch.course.repo import find_repository

REPO_DIR = find_repository()

tomllib = pytest.importorskip("tomllib",
                              reason="tomllib is in the standard library from Python 3.11")

BOOK = REPO_DIR / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))
PYPROJECT = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())
CONFIG = yaml.safe_load((REPO_DIR / "_config.yml").read_text())
SPHINX_CONFIG = CONFIG["sphinx"]["config"]


def workflow(name):
    data = yaml.safe_load((REPO_DIR / ".github" / "workflows" / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def steps(job):
    return job["steps"]


def runs(job):
    return "\n".join(step.get("run", "") for step in steps(job))


def uses(job, action):
    found = [step for step in steps(job) if step.get("uses", "").startswith(action + "@")]
    assert len(found) == 1, f"expected one step using {action}"
    return found[0]


def launch_links():
    spec = importlib.util.spec_from_file_location("launch_links", BOOK / "_ext" / "launch_links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The repository URL, written once -----------------------------------------------------------


def test_the_repository_url_is_written_in_pyproject_and_the_book_uses_the_same():
    urls = PYPROJECT["project"]["urls"]
    # `make notebooks` reads this key for the notebooks' install cell
    repository = urls["Repository"]
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", repository)
    assert match, f"Repository must be a GitHub repository URL: {repository!r}"
    org, name = match.groups()
    assert urls["Issues"] == f"{repository}/issues"
    assert urls["Homepage"] == urls["Documentation"] == f"https://{org}.github.io/{name}"
    assert CONFIG["repository"]["url"] == repository, ("_config.yml names another repository than "
                                                       "pyproject.toml")
    assert CONFIG["repository"]["branch"] == "main" and CONFIG["repository"]["path_to_book"] == ""
    for button in ("use_repository_button", "use_issues_button", "use_edit_page_button",
                   "use_download_button"):
        assert CONFIG["html"][button] is True, button


def test_launch_buttons_offer_colab_and_binder():
    launch = CONFIG["launch_buttons"]
    assert launch["colab_url"] == "https://colab.research.google.com"
    assert launch["binderhub_url"] == "https://mybinder.org"
    assert launch["notebook_interface"] == "jupyterlab"
    assert CONFIG["sphinx"]["local_extensions"]["launch_links"] == "book/_ext"


# Colab: the notebooks branch ------------------------------------------------------------------


def test_colab_link_of_a_chapter_opens_its_notebook_on_the_notebooks_branch():
    url = launch_links().colab_url("https://colab.research.google.com/",
                                   "https://github.com/org/repo", "notebooks", "notebooks",
                                   "book/02_bahdanau")
    assert url == "https://colab.research.google.com/github/org/repo/blob/notebooks/notebooks/02_bahdanau.ipynb"
    with pytest.raises(ValueError, match="GitHub only"):
        launch_links().colab_url("https://colab.research.google.com", "https://gitlab.com/org/repo",
                                 "notebooks", "notebooks", "book/02_bahdanau")


def test_colab_button_is_rewritten_on_chapters_and_removed_elsewhere():
    class Config:
        colab_notebooks_branch = SPHINX_CONFIG["colab_notebooks_branch"]
        colab_notebooks_dir = SPHINX_CONFIG["colab_notebooks_dir"]
        colab_notebooks_pages = SPHINX_CONFIG["colab_notebooks_pages"]

    repository = PYPROJECT["project"]["urls"]["Repository"]
    theme = {"launch_buttons": CONFIG["launch_buttons"], "repository_url": repository}

    def header(pagename):
        buttons = [{"label": "download-buttons", "buttons": []},
                   {"label": "launch-buttons", "buttons": [
                       {"text": "Binder", "url": "https://mybinder.org/v2/gh/x"},
                       {"text": "Colab", "url": f"https://colab.research.google.com/github/x/{pagename}.md"}]}]
        launch_links().rewrite_colab_button(buttons, pagename, Config, theme)
        return {b["text"]: b["url"] for b in buttons[1]["buttons"]}

    chapter = header("book/12_numba_cpu")
    assert chapter["Colab"] == (f"https://colab.research.google.com/github/{repository.split('github.com/')[1]}"
                                f"/blob/{Config.colab_notebooks_branch}/{Config.colab_notebooks_dir}/12_numba_cpu.ipynb")
    assert chapter["Binder"] == "https://mybinder.org/v2/gh/x"
    assert set(header("book/api")) == {"Binder"}, "a page without a notebook must not offer Colab"


def test_every_chapter_is_a_page_that_gets_a_colab_notebook():
    pattern = SPHINX_CONFIG["colab_notebooks_pages"]
    for path in CHAPTERS:
        assert fnmatch.fnmatchcase(f"book/{path.stem}", pattern), path.name
    for page in ("book/api", "book/bibliography"):
        assert not fnmatch.fnmatchcase(page, pattern), page


def test_the_book_workflow_builds_deploys_and_pushes_the_notebooks_colab_opens():
    wf = workflow("book.yml")
    assert wf["on"]["push"]["branches"] == ["main"] and "workflow_dispatch" in wf["on"]
    assert wf["concurrency"]["group"] and wf["concurrency"]["cancel-in-progress"] is False
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert uses(build, "actions/setup-python")["with"]["python-version"] == "3.11"
    script = runs(build)
    assert script.index("make notebooks") < script.index("make book")
    assert uses(build, "actions/upload-pages-artifact")["with"]["path"] == "_build/html"
    branch, folder = SPHINX_CONFIG["colab_notebooks_branch"], SPHINX_CONFIG["colab_notebooks_dir"]
    assert f"git switch --orphan {branch}" in script
    assert f"git push --force origin {branch}" in script
    assert f"git add --force {folder}/*.ipynb" in script
    assert build["permissions"] == {"contents": "write"}
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert uses(deploy, "actions/deploy-pages")["id"] == "deployment"


def test_the_test_workflow_runs_make_test_on_push_and_pull_request():
    wf = workflow("test.yml")
    assert set(wf["on"]) == {"push", "pull_request"}
    job = wf["jobs"]["test"]
    assert uses(job, "actions/setup-python")["with"]["python-version"] == "3.11"
    assert "make test" in runs(job)


# Binder: the repository itself ----------------------------------------------------------------


def test_binder_installs_the_library_and_opens_markdown_chapters_as_notebooks():
    requirements = (REPO_DIR / "requirements.txt").read_text().splitlines()
    assert "-e ." in requirements, "Binder installs requirements.txt: it must install the library"
    assert any(line.startswith("jupytext") for line in requirements)
    post_build = REPO_DIR / "postBuild"
    assert os.access(post_build, os.X_OK), "repo2docker runs postBuild only if it is executable"
    assert "jupytext-config set-default-viewer markdown" in post_build.read_text()
    assert not (REPO_DIR / "binder").exists() and not (REPO_DIR / ".binder").exists(), (
        "with a binder/ folder, repo2docker ignores requirements.txt and postBuild at the root")

# A path given as a string literal to something that reads a file.
RELATIVE_READ = re.compile(
    r"""(open|Path|np\.load|np\.loadtxt|json\.load|pd\.read_\w+|imread|read_params|load_params)"""
    r"""\(\s*(f?["'])(?!/)""")


def code_cells(path):
    return re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", path.read_text(), re.S | re.M)


def test_the_pattern_catches_what_it_is_for():
    for line in ['Path("data/x.json").read_text()', "open('results.csv')", 'np.load(f"{name}.npz")',
                 'json.loads(Path("../book/data/x.json").read_text())']:
        assert RELATIVE_READ.search(line), line
    assert not RELATIVE_READ.search('files("attention_scratch") / "data" / "x.json"')


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_read_no_file_relative_to_the_working_directory(path):
    cells = code_cells(path)
    assert cells, f"{path.name} has no code cells (is the pattern out of date?)"
    for cell in cells:
        for line in cell.splitlines():
            assert not RELATIVE_READ.search(line), (
                f"{path.name} reads a file relative to the working directory, which breaks when "
                f"the chapter runs as a notebook elsewhere: {line.strip()!r}. Ship the file in "
                "attention_scratch/data/ and read it with "
                "importlib.resources.files('attention_scratch').")


def test_every_data_file_is_package_data():
    """A file in attention_scratch/data/ that no package-data pattern names is missing
    from the wheel."""
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["attention_scratch"]
    data = files("attention_scratch") / "data"
    names = [entry.name for entry in data.iterdir() if entry.is_file()]
    assert "12_bench_full.json" in names  # chapter 12's recorded benchmark
    for name in names:
        assert any(fnmatch.fnmatch(f"data/{name}", pattern) for pattern in patterns), (
            f"attention_scratch/data/{name} is not listed in [tool.setuptools.package-data]")



def test_the_api_appendix_shows_defaults_as_written_not_as_computed_on_the_build_machine():
    """`collect(package_dir=PACKAGE_DIR)` printed the checkout's absolute path; with
    autodoc_preserve_defaults Sphinx shows the source text of a default instead."""
    import inspect

    from attention_scratch.course import exercises

    default = inspect.signature(exercises.collect).parameters["package_dir"].default
    assert str(REPO_DIR) in str(default), "the example above no longer holds: pick another"
    assert SPHINX_CONFIG["autodoc_preserve_defaults"] is True


def test_an_inline_script_added_after_the_builder_is_set_up_is_written_once():
    """sphinx-thebe's `const THEBE_JS_URL` appeared twice on every page
    (a script error in the browser)."""
    from types import SimpleNamespace

    from sphinx.builders.html import StandaloneHTMLBuilder

    spec = importlib.util.spec_from_file_location("inline_scripts",
                                                  BOOK / "_ext" / "inline_scripts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    builder = StandaloneHTMLBuilder.__new__(StandaloneHTMLBuilder)
    builder._js_files = []
    body = 'const THEBE_JS_URL = "x"'
    builder.add_js_file("theme.js", priority=500)
    # what app.add_js_file does once the builder exists
    builder.add_js_file(None, priority=500, body=body)
    module.normalize_inline_scripts(SimpleNamespace(builder=builder), env=None)  # env-updated
    for filename, attrs in [("theme.js", {"priority": 500}),
                            (None, {"priority": 500, "body": body})]:
        # prepare_writing adds the registry's scripts again
        builder.add_js_file(filename or "", **attrs)
    assert [js.attributes.get("body") for js in builder._js_files] == [None, body]
