"""Write the chapters as Jupyter notebooks in which every exercise is done and graded in place.

``python -m attention_scratch.course.notebooks`` (``make notebooks``) reads each
``book/NN_*.md`` (MyST Markdown, through jupytext) and writes
``notebooks/NN_*.ipynb`` where

* a first cell installs the library from the repository when it is not
  importable (Colab, a fresh Jupyter), so the same file works everywhere;
* every ``{exercise}`` block becomes its text, a code cell holding the stub
  (exactly what ``exercises/`` holds) and a cell ``grade("N.M", function)`` that
  grades the function just defined and prints the grader's line for it;
* every ``{solution}`` block becomes a pointer to where the answer is, so the
  notebook shows no answer.

Running a fresh notebook top to bottom never stops at an exercise: an untouched
stub is reported "not started".
"""
import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

from .exercises import CHAPTERS, collect, stub_lines
from .repo import find_repository

_OPEN_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,}|:{3,})\{(?P<name>[\w:-]+)\}\s*(?P<arg>.*)$")
_EXERCISE_TITLE = re.compile(r"^(?P<title>.*?)\s+—\s+(?P<points>\d+) points?$")
_ADMONITIONS = {"note", "warning", "tip", "important", "caution", "attention", "hint", "seealso"}


def project_url(repo_dir, key="Repository"):
    """An address written once in pyproject.toml's [project.urls] (Repository, Homepage ...)."""
    text = (Path(repo_dir) / "pyproject.toml").read_text()
    found = re.search(rf'^\[project\.urls\][^\[]*?^{key}\s*=\s*"([^"]+)"', text, re.M | re.S)
    if not found:
        raise ValueError(f"pyproject.toml has no [project.urls] {key}")
    return found.group(1)


def install_cell(url):
    """The first cell: make ``attention_scratch`` importable
    (and gradable) wherever the notebook runs."""
    folder = url.rstrip("/").rsplit("/", 1)[-1]
    return f'''# Run this cell first. In a clone with `make` nothing happens; elsewhere (Colab, a
# fresh Jupyter) it clones the repository and installs the library, whose grader needs the clone.
import importlib.util, os, subprocess, sys

if importlib.util.find_spec("attention_scratch") is None:
    if not os.path.isdir("{folder}"):
        subprocess.run(["git", "clone", "--depth", "1", "{url}", "{folder}"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "{folder}[numba,mpi]"],
                   check=True)
    sys.path.insert(0, os.path.abspath("{folder}"))  # this kernel predates the install
    os.environ["ATTENTION_SCRATCH_REPO"] = os.path.abspath("{folder}")
from attention_scratch.course.notebook import grade'''


def _blocks(text):
    """Split MyST Markdown into ("text", str) and ("directive", name, arg, body) pieces."""
    lines = text.split("\n")
    pieces, buffer, i = [], [], 0
    while i < len(lines):
        opening = _OPEN_FENCE.match(lines[i])
        if not opening:
            buffer.append(lines[i])
            i += 1
            continue
        fence = opening.group("fence")
        close = re.compile(rf"^{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if buffer:
            pieces.append(("text", "\n".join(buffer)))
            buffer = []
        pieces.append(("directive", opening.group("name"), opening.group("arg").strip(),
                       lines[i + 1:j]))
        i = j + 1
    if buffer:
        pieces.append(("text", "\n".join(buffer)))
    return pieces


def _options_and_body(body):
    options, rest = {}, list(body)
    while rest and rest[0].startswith(":"):
        key, _, value = rest.pop(0)[1:].partition(":")
        options[key.strip()] = value.strip()
    return options, "\n".join(rest).strip()


def _plain_markdown(text):
    """MyST-only roles made readable in Jupyter: citations, references, equation labels."""
    text = re.sub(r"\{cite:[pt]\}`([^`]+)`", lambda m: "[" + m.group(1).replace(",", "; ") + "]",
                  text)
    text = re.sub(r"\{(?:ref|numref|eq|doc)\}`(?:([^`<]+?)\s*<[^`]+>|([^`]+))`",
                  lambda m: (m.group(1) or m.group(2)).strip(), text)
    return re.sub(r"^\(([\w-]+)\)=\s*$", "", text, flags=re.M)


def notebook_cells(markdown, exercises, page_url):
    """(cell type, source) pairs for one markdown cell of a chapter, exercises turned into code."""
    by_label = {f"ex-{ex.chapter}-{ex.number}": ex for ex in exercises}
    cells, text = [], []

    def flush():
        joined = "\n".join(text).strip()
        if joined:
            cells.append(("markdown", _plain_markdown(joined)))
        text.clear()

    for piece in _blocks(markdown):
        if piece[0] == "text":
            text.append(piece[1])
            continue
        _, name, arg, body = piece
        options, content = _options_and_body(body)
        if name == "exercise" and options.get("label") in by_label:
            ex = by_label[options["label"]]
            title = _EXERCISE_TITLE.match(arg)
            heading = title.group("title") if title else arg
            text.append(f"**Exercise {ex.id}: {heading}** "
                        f"({ex.points} point{'' if ex.points == 1 else 's'})\n\n{content}")
            flush()
            stub = "\n".join(["import numpy as np", *ex.uses, "", ""] + stub_lines(ex))
            cells.append(("code", stub))
            cells.append(("code", f'grade("{ex.id}", {ex.function_name})'))
        elif name == "solution":
            ex = by_label.get(arg)
            where = f"`solutions/{CHAPTERS[ex.chapter]}.py`" if ex else "`solutions/`"
            text.append(f"*Try it first. The answer is in {where} and behind the solution button "
                        f"of [this chapter in the online book]({page_url}).*")
        elif name in _ADMONITIONS:
            quoted = "\n".join(f"> {line}" if line else ">" for line in content.split("\n"))
            text.append(f"> **{name.capitalize()}{': ' + arg if arg else ''}**\n>\n{quoted}")
        elif name in ("math", "bibliography", "eval-rst", "literalinclude", "figure", "image"):
            if name == "math":
                text.append(f"$$\n{content}\n$$")
        else:
            text.append(content)
    flush()
    return cells


def build_notebook(chapter_path, exercises, url, book_url):
    """The notebook (an nbformat node) of one chapter."""
    import jupytext
    import nbformat

    source = jupytext.read(chapter_path)
    notebook = nbformat.v4.new_notebook(metadata=source.metadata)
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.cells.append(nbformat.v4.new_code_cell(install_cell(url)))
    for cell in source.cells:
        if cell.cell_type != "markdown":
            notebook.cells.append(nbformat.v4.new_code_cell(cell.source))
            continue
        page = f"{book_url.rstrip('/')}/book/{Path(chapter_path).stem}.html"
        for kind, text in notebook_cells(cell.source, exercises, page):
            maker = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
            notebook.cells.append(maker(text))
    return notebook


MANIFEST = ".generated.json"


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def write_notebooks(out_dir=None, repo_dir=None, out=sys.stdout):
    """Write every chapter's notebook; a notebook changed since it was written (your work) is kept.

    Returns the paths of the chapters' notebooks, written or kept.
    """
    import nbformat

    repo_dir = Path(repo_dir or find_repository())
    out_dir = Path(out_dir or repo_dir / "notebooks")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    url, book_url = project_url(repo_dir, "Repository"), project_url(repo_dir, "Homepage")
    exercises = collect()
    paths = []
    for chapter_path in sorted((repo_dir / "book").glob("[0-9][0-9]_*.md")):
        number = int(chapter_path.stem[:2])
        own = [ex for ex in exercises if ex.chapter == number]
        text = nbformat.writes(build_notebook(chapter_path, own, url, book_url)) + "\n"
        path = out_dir / f"{chapter_path.stem}.ipynb"
        paths.append(path)
        if (path.exists() and path.read_text() != text
                and _digest(path.read_text()) != manifest.get(path.name)):
            print(f"kept {path.name}: it holds your work (delete it to get a fresh notebook)",
                  file=out)
            continue
        path.write_text(text)
        manifest[path.name] = _digest(text)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return paths


def clean(out_dir):
    """Remove the notebooks nobody has changed since they were written;
    keep (and name) the others."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    if not out_dir.exists():
        return []
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    kept = []
    for path in sorted(out_dir.glob("*.ipynb")):
        if _digest(path.read_text()) == manifest.get(path.name):
            path.unlink()
        else:
            kept.append(path)
    if not kept:
        manifest_path.unlink(missing_ok=True)
        for leftover in out_dir.glob(".ipynb_checkpoints"):
            shutil.rmtree(leftover, ignore_errors=True)
        if not any(out_dir.iterdir()):
            out_dir.rmdir()
    return kept


def check(paths, exercises=None, timeout=900):
    """Execute each notebook from its folder;
    return problems (errors, missing "not started" lines)."""
    import nbclient
    import nbformat

    exercises = collect() if exercises is None else exercises
    problems = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        try:
            nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": str(path.parent)}}).execute()
        except Exception as error:
            problems.append(f"{path.name}: {type(error).__name__}: "
                            f"{str(error).strip().splitlines()[-1]}")
            continue
        printed = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                            for o in c.get("outputs", []))
        for ex in (e for e in exercises if e.chapter == int(path.stem[:2])):
            line = f"{ex.id}  0/{ex.points}  not started"
            if line not in printed:
                problems.append(f"{path.name}: the grade cell of exercise {ex.id} did "
                                f"not print {line!r}")
        print(f"ran {path.name}", flush=True)
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder to write into (default: notebooks/ of the clone)")
    parser.add_argument("--check", action="store_true",
                        help="also execute every notebook from its folder and check each exercise "
                             "is reported 'not started'")
    parser.add_argument("--clean", action="store_true", help="remove the notebooks nobody changed")
    args = parser.parse_args(argv)
    out_dir = Path(args.out or find_repository() / "notebooks")
    if args.clean:
        for path in clean(out_dir):
            print(f"kept {path}: it holds your work")
        return 0
    paths = write_notebooks(out_dir)
    print(f"{len(paths)} notebooks in {out_dir} "
          "(open them with `make lab`, or upload one to Colab)")
    if args.check:
        problems = check(paths)
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
