"""The four mirrors stay in step: chapter, exercise file, graded test, table of contents.

The book itself is built and executed by `make book`; these checks catch the
mistakes that a build does not: a chapter missing from the table of contents,
an exercise without a block in its chapter, or a solution that the chapter
does not link.
"""
import re

import pytest
import yaml

from attention_scratch.course.exercises import CHAPTERS, collect
from attention_scratch.course.repo import find_repository

REPO_DIR = find_repository()

BOOK = REPO_DIR / "book"


def toc_files():
    toc = yaml.safe_load((REPO_DIR / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part.get("chapters", [])]
    return files


def test_every_toc_entry_exists_and_every_chapter_is_in_the_toc():
    listed = toc_files()
    for entry in listed:
        assert (REPO_DIR / f"{entry}.md").exists(), f"_toc.yml lists {entry}, which does not exist"
    for path in sorted(BOOK.glob("[0-9][0-9]_*.md")):
        assert f"book/{path.stem}" in listed, f"{path.name} is not in _toc.yml"


def test_chapter_files_share_the_stem_of_their_exercise_files():
    for stem in CHAPTERS.values():
        chapter = BOOK / f"{stem[2:]}.md"
        exercise_file = REPO_DIR / "exercises" / f"{stem}.py"
        if exercise_file.exists():
            assert chapter.exists(), f"{exercise_file.name} exists but book/{chapter.name} does not"


@pytest.mark.parametrize("chapter", sorted({ex.chapter for ex in collect()}))
def test_each_exercise_has_a_block_a_hidden_solution_and_grading_instructions(chapter):
    stem = CHAPTERS[chapter]
    text = (BOOK / f"{stem[2:]}.md").read_text()
    assert f"exercises/{stem}.py" in text, "the chapter must name the file to edit"
    assert f"make grade CHAPTER={chapter}" in text, "the chapter must give the grading command"
    for ex in (e for e in collect() if e.chapter == chapter):
        label = f"ex-{chapter}-{ex.number}"
        assert re.search(rf"```{{exercise}}[^\n]*\n:label: {label}\n",
                         text), f"no exercise block {label}"
        solution = re.search(rf"```{{solution}} {label}\n:class: dropdown\n(.*?)\n```\n", text,
                             re.S)
        assert solution, f"no dropdown solution for {label}"
        assert re.search(rf"^:pyobject: {ex.function_name}$", solution.group(1), re.M), (
            f"the solution of {label} must include {ex.function_name} from solutions/{stem}.py")


@pytest.mark.parametrize("path", sorted(BOOK.glob("[0-9][0-9]_*.md")), ids=lambda p: p.stem)
def test_headings_carry_no_hand_written_numbers(path):
    """Sphinx numbers chapters and sections; a hand-written number would be shown twice."""
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("#"):
            title = line.lstrip("#").strip()
            assert not re.match(r"(Chapter\s+)?\d+(\.\d+)*[.:)]?\s", title), (
                f"{path.name}: heading {line!r} carries a number; Sphinx adds it")


def test_every_part_but_the_appendix_is_numbered():
    toc = yaml.safe_load((REPO_DIR / "_toc.yml").read_text())
    for part in toc["parts"]:
        if part["caption"] != "Appendix":
            assert part.get("numbered") is True, f"part {part['caption']!r} needs numbered: true"
