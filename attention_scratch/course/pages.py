"""No exercise's answer on its chapter page: the check on the built book and on executed chapters.

An exercise's *answer lines* are the substantial lines of its solution region in
the library (comments, hints and short structural lines such as ``else:`` are
left out). A chapter page *leaks* an exercise when its visible text, outside the
exercise's solution block, holds ``min(2, n)`` of the ``n`` answer lines. The
text is read from the built HTML (``_build/html/book/NN_*.html``, solution
dropdowns removed) or from an executed notebook of the chapter.

    python -m attention_scratch.course.pages _build/html        # every chapter page
    python -m attention_scratch.course.pages --execute 4        # run chapter 4, then check it
"""
import argparse
import html
import html.parser
import json
import re
import sys
from pathlib import Path

from .exercises import CHAPTERS, collect, solution_region

_MIN_CHARS = 12  # shorter lines (``return out``, ``else:``) say nothing about the answer
_LONG_CHARS = 25  # lines this long also count when the page wraps them differently
_STRUCTURE = re.compile(r"^(return|raise|yield|else:|try:|finally:|pass|continue|break)\b\s*")


def _without_comment(line):
    """``line`` up to a ``#`` that is not inside a string literal."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#":
            return line[:i]
    return line


def normalise(line):
    """One line of code without indentation, trailing comment and repeated spaces."""
    stripped = line.strip()
    if not stripped.startswith("#"):
        stripped = _without_comment(stripped)
    return re.sub(r"\s+", " ", stripped).strip()


def answer_lines(exercise):
    """The substantial lines of an exercise's solution, normalised, in order, without repeats."""
    seen = []
    for raw in solution_region(exercise):
        line = normalise(raw)
        if line.startswith("#") or len(_STRUCTURE.sub("", line)) < _MIN_CHARS:
            continue
        if line not in seen:
            seen.append(line)
    return seen


class _VisibleText(html.parser.HTMLParser):
    """Text of an HTML page without scripts, styles and sphinx-exercise solution blocks."""

    _VOID = frozenset({"br", "img", "hr", "meta", "link", "input", "source", "wbr", "col", "area",
                       "base"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self._skip_depth, self._depth = [], None, 0

    def handle_starttag(self, tag, attrs):
        if tag in self._VOID:
            if tag == "br":
                self.parts.append("\n")
            return
        self._depth += 1
        classes = (dict(attrs).get("class") or "").split()
        hidden = tag in ("script", "style") or (tag == "div" and "solution" in classes)
        if self._skip_depth is None and hidden:
            self._skip_depth = self._depth
        if tag in ("p", "div", "pre", "li", "tr", "h1", "h2", "h3", "h4"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._VOID:
            return
        if self._skip_depth == self._depth:
            self._skip_depth = None
        self._depth -= 1
        if tag in ("p", "div", "pre", "li", "tr"):
            self.parts.append("\n")

    def handle_data(self, data):
        if self._skip_depth is None:
            self.parts.append(data)


def visible_text_of_html(page):
    """The text a reader can see on a built page, solution dropdowns removed."""
    parser = _VisibleText()
    parser.feed(page)
    parser.close()
    return html.unescape("".join(parser.parts))


_SOLUTION_BLOCK = re.compile(r"^(`{3,}|:{3,})\{solution\}.*?^\1\s*$", re.S | re.M)


def visible_text_of_notebook(notebook):
    """The text of an executed notebook (a dict): cells and outputs, solution blocks removed."""
    parts = []
    for cell in notebook["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "markdown":
            parts.append(_SOLUTION_BLOCK.sub("", source))
            continue
        parts.append(source)
        for output in cell.get("outputs", []):
            if "text" in output:
                parts.append("".join(output["text"]))
            for kind in ("text/markdown", "text/plain", "text/html"):
                data = output.get("data", {}).get(kind)
                if data is not None:
                    data = "".join(data) if isinstance(data, list) else data
                    parts.append(visible_text_of_html(data) if kind == "text/html" else data)
    return "\n".join(parts)


def leaked_lines(exercise, text):
    """The answer lines of ``exercise`` readable in ``text`` (empty when the page does not leak)."""
    answers = answer_lines(exercise)
    if not answers:
        return []
    page_lines = {normalise(line) for line in text.splitlines()}
    squeezed = re.sub(r"\s+", "", text)
    found = [line for line in answers if line in page_lines
             or (len(line) >= _LONG_CHARS and re.sub(r"\s+", "", line) in squeezed)]
    return found if len(found) >= min(2, len(answers)) else []


def page_leaks(chapter, text, exercises=None):
    """{exercise id: leaked lines} for the exercises of ``chapter`` whose answer ``text`` shows."""
    exercises = collect() if exercises is None else exercises
    leaks = {}
    for ex in exercises:
        if ex.chapter == chapter:
            found = leaked_lines(ex, text)
            if found:
                leaks[ex.id] = found
    return leaks


def chapter_page(html_dir, chapter):
    """The built HTML page of a chapter."""
    return Path(html_dir) / "book" / f"{CHAPTERS[chapter][2:]}.html"


def check_built_book(html_dir):
    """{exercise id: leaked lines} over every chapter page of a built book."""
    leaks = {}
    for chapter in sorted({ex.chapter for ex in collect()}):
        page = chapter_page(html_dir, chapter)
        if not page.exists():
            raise FileNotFoundError(f"{page} is missing: build the book first (make book)")
        leaks.update(page_leaks(chapter, visible_text_of_html(page.read_text())))
    return leaks


def execute_chapter(chapter, repo_dir, timeout=900):
    """Run one chapter's MyST notebook (as the book build does, from book/) and
    return it as a dict."""
    import jupytext
    import nbclient

    path = Path(repo_dir) / "book" / f"{CHAPTERS[chapter][2:]}.md"
    notebook = jupytext.read(path)
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    return json.loads(jupytext.writes(notebook, fmt="ipynb"))


def report(leaks):
    """Lines a person reads: which exercise leaks, with the lines found."""
    lines = []
    for exercise_id, found in sorted(leaks.items(),
                                     key=lambda kv: [int(p) for p in kv[0].split(".")]):
        lines.append(f"exercise {exercise_id}: its answer is on the chapter page outside the "
                     "solution block:")
        lines.extend(f"    {line}" for line in found)
    return "\n".join(lines)


def main(argv=None):
    from .repo import find_repository

    parser = argparse.ArgumentParser(description="Fail when a chapter page shows an "
                                                 "exercise's answer.")
    parser.add_argument("html_dir", nargs="?", help="the built book (_build/html)")
    parser.add_argument("--execute", type=int, action="append", metavar="N",
                        help="execute chapter N from book/ and check the result (repeatable)")
    args = parser.parse_args(argv)
    if not args.html_dir and not args.execute:
        parser.error("give the built book's folder or --execute N")
    leaks = {}
    if args.html_dir:
        leaks.update(check_built_book(args.html_dir))
    for chapter in args.execute or []:
        notebook = execute_chapter(chapter, find_repository())
        leaks.update(page_leaks(chapter, visible_text_of_notebook(notebook)))
    if leaks:
        print(report(leaks))
        return 1
    print("no exercise's answer is on its chapter page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
