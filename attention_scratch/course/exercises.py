"""Write ``exercises/`` and ``solutions/`` from the exercise marks in the library.

The library source is the one source of truth. An exercise is a whole function
between two marks::

    # BEGIN EXERCISE 1.2 (3 points): masked softmax with empty rows
    # uses: from attention_scratch.softmax import stable_softmax   (optional)
    def masked_softmax(x, mask, axis=-1):
        \"\"\"...\"\"\"
        # BEGIN SOLUTION
        # HINT: hint lines stay in the stub
        ...
        # END SOLUTION
    # END EXERCISE

A ``# writes: name`` line beside ``# uses:`` names an argument the function is
meant to change in place; the grader fails an answer that changes any other.

``solutions/chNN_<stem>.py`` receives the function without the marks;
``exercises/chNN_<stem>.py`` receives it with the solution replaced by
``raise NotImplementedError("Exercise 1.2: ...")``. A stub a student has edited
is never overwritten: ``exercises/.generated.json`` records the hash of each
stub as written, and a file whose hash differs is left alone, except that the
stub of an exercise it lacks (one added to the library later) is appended to it.

Run ``python -m attention_scratch.course.exercises`` (``make exercises``) to write
the files, and ``--check`` to fail when they are stale (CI does).
"""
import argparse
import ast
import dataclasses
import hashlib
import json
import re
import sys
from pathlib import Path

from .repo import PACKAGE_DIR, find_repository

# Chapter number -> file stem shared by the chapter, the exercise file and its test.
CHAPTERS = {
    1: "ch01_numpy_toolkit",
    2: "ch02_bahdanau",
    3: "ch03_luong",
    4: "ch04_scaled_dot_product",
    5: "ch05_masks",
    6: "ch06_multi_head",
    7: "ch07_positions",
    8: "ch08_online_softmax",
    9: "ch09_flash_forward",
    10: "ch10_flash_backward",
    11: "ch11_decoding_and_distribution",
    12: "ch12_numba_cpu",
    13: "ch13_cupy_gpu",
    14: "ch14_efficient_variants",
    15: "ch15_tiny_transformer",
    16: "ch16_programmable_attention",
}
TITLES = {
    1: "The NumPy toolkit for attention",
    2: "Bahdanau attention",
    3: "Luong attention",
    4: "Scaled dot-product attention",
    5: "Masks",
    6: "Multi-head attention",
    7: "Positions",
    8: "The online softmax",
    9: "Flash attention: the forward pass",
    10: "Flash attention: the backward pass",
    11: "Decoding and distribution",
    12: "A Numba CPU kernel",
    13: "A CuPy GPU kernel",
    14: "Efficient variants",
    15: "A tiny transformer",
    16: "Programmable attention",
}

BEGIN = re.compile(r"^# BEGIN EXERCISE (\d+)\.(\d+) \((\d+) points?\): (.+)$")
END = "# END EXERCISE"
USES = re.compile(r"^# uses: (.+)$")
WRITES = re.compile(r"^# writes: (.+)$")
BEGIN_SOLUTION = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
END_SOLUTION = re.compile(r"^\s*# END SOLUTION\s*$")
HINT = re.compile(r"^\s*# HINT:")
MANIFEST = ".generated.json"


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One marked exercise: its id, points, title, source lines and imports."""

    chapter: int
    number: int
    points: int
    title: str
    source: tuple  # the function's lines, marks included
    uses: tuple  # import statements the function needs
    origin: str  # "attention_scratch/softmax.py:15"
    writes: tuple = ()  # arguments the function is meant to change in place

    @property
    def id(self):
        return f"{self.chapter}.{self.number}"

    @property
    def function_name(self):
        for line in self.source:
            match = re.match(r"def (\w+)\(", line)
            if match:
                return match.group(1)
        raise ValueError(f"exercise {self.id} at {self.origin} holds no top-level function")


def parse_exercises(path):
    """Return the exercises marked in one Python source file."""
    lines = Path(path).read_text().splitlines()
    found, current = [], None
    for lineno, line in enumerate(lines, start=1):
        head = BEGIN.match(line)
        if head:
            if current is not None:
                raise ValueError(f"{path}:{lineno}: BEGIN EXERCISE inside exercise {current['id']}")
            ch, num, pts, title = head.groups()
            current = dict(id=f"{ch}.{num}", chapter=int(ch), number=int(num), points=int(pts),
                           title=title.strip(), body=[], uses=[], writes=[],
                           origin=f"{path}:{lineno}")
        elif line.rstrip() == END:
            if current is None:
                raise ValueError(f"{path}:{lineno}: END EXERCISE without BEGIN")
            found.append(_finish(current))
            current = None
        elif current is not None:
            uses, writes = USES.match(line), WRITES.match(line)
            if uses:
                current["uses"].append(uses.group(1).strip())
            elif writes:
                current["writes"].extend(w.strip() for w in writes.group(1).split(","))
            else:
                current["body"].append(line)
    if current is not None:
        raise ValueError(f"{path}: exercise {current['id']} has no END EXERCISE")
    return found


def _finish(raw):
    body = list(raw["body"])
    while body and not body[-1].strip():
        body.pop()
    if not any(BEGIN_SOLUTION.match(line) for line in body):
        raise ValueError(f"{raw['origin']}: exercise {raw['id']} has no BEGIN SOLUTION mark")
    return Exercise(raw["chapter"], raw["number"], raw["points"], raw["title"],
                    tuple(body), tuple(raw["uses"]), raw["origin"], tuple(raw["writes"]))


def collect(package_dir=PACKAGE_DIR):
    """All exercises in the package, sorted by (chapter, number); ids must be unique."""
    exercises = []
    for path in sorted(Path(package_dir).rglob("*.py")):
        exercises.extend(parse_exercises(path))
    seen = {}
    for ex in exercises:
        if ex.id in seen:
            raise ValueError(f"exercise {ex.id} is marked twice: {seen[ex.id]} and {ex.origin}")
        if ex.chapter not in CHAPTERS:
            raise ValueError(f"{ex.origin}: chapter {ex.chapter} has no entry in CHAPTERS")
        seen[ex.id] = ex.origin
    return sorted(exercises, key=lambda e: (e.chapter, e.number))


def solution_lines(ex):
    """The function as the library has it, without any marks."""
    return [line for line in ex.source
            if not (BEGIN_SOLUTION.match(line) or END_SOLUTION.match(line))]


def solution_region(ex):
    """The lines between BEGIN and END SOLUTION: what a student writes (hints left out)."""
    out, inside = [], False
    for line in ex.source:
        if BEGIN_SOLUTION.match(line):
            inside = True
        elif END_SOLUTION.match(line):
            inside = False
        elif inside and not HINT.match(line):
            out.append(line)
    return out


def stub_lines(ex):
    """The function with each solution region replaced by ``raise NotImplementedError``."""
    out, inside = [], False
    for line in ex.source:
        start = BEGIN_SOLUTION.match(line)
        if start:
            indent, inside = start.group(1), True
        elif END_SOLUTION.match(line):
            out.append(f'{indent}raise NotImplementedError("Exercise {ex.id}: {ex.title}")')
            inside = False
        elif not inside or HINT.match(line):
            out.append(line)
    return out


def _header(ex):
    return f"# Exercise {ex.id} ({ex.points} point{'' if ex.points == 1 else 's'}): {ex.title}"


def stub_section(ex):
    """One exercise as it stands in a stub file: its heading and its stub."""
    return _header(ex) + "\n" + "\n".join(stub_lines(ex))


def render(chapter, exercises, kind):
    """The text of ``exercises/`` (kind="stub") or ``solutions/``
    (kind="solution") for a chapter."""
    if kind == "stub":
        intro = (f'"""Chapter {chapter} exercises: {TITLES[chapter]}.\n\n'
                 "Replace each `raise NotImplementedError(...)` with your code, then grade:\n\n"
                 f"    make grade CHAPTER={chapter}\n"
                 f"    python -m attention_scratch.grade --chapter {chapter}\n\n"
                 "This file was written by `make exercises` from the library; your edits are\n"
                 'never overwritten. The answers are in solutions/ and in the book.\n"""')
    else:
        intro = (f'"""Chapter {chapter} solutions: {TITLES[chapter]}.\n\n'
                 "Written by `make exercises` from the library source; do not edit.\n"
                 'Grade them with: python -m attention_scratch.grade --solutions --chapter '
                 f'{chapter}\n"""')
    imports = ["import numpy as np"]
    for ex in exercises:
        imports.extend(u for u in ex.uses if u not in imports)
    parts = [intro, _import_block(imports)]
    for ex in exercises:
        parts.append(stub_section(ex) if kind == "stub"
                     else _header(ex) + "\n" + "\n".join(solution_lines(ex)))
    return "\n\n\n".join(parts) + "\n"


def _import_block(imports):
    """``imports`` in isort's order: standard library, third party, this package, one blank line
    between the sections; ``import x`` before ``from x import y`` within each."""
    def section(line):
        top = line.split()[1].split(".")[0]
        return 2 if top == "attention_scratch" else 0 if top in sys.stdlib_module_names else 1
    plain, names = set(), {}
    for line in imports:
        if line.startswith("from "):
            module, _, listed = line[5:].partition(" import ")
            names.setdefault(module, set()).update(n.strip() for n in listed.split(","))
        else:
            plain.add(line)
    merged = list(plain)
    for module, listed in names.items():
        # ruff's order by type: CONSTANTS, Classes, functions
        ordered = sorted(listed, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
        line = f"from {module} import {', '.join(ordered)}"
        if len(line) > 100:
            line = f"from {module} import (\n" + "".join(f"    {n},\n" for n in ordered) + ")"
        merged.append(line)
    sections = [sorted((u for u in merged if section(u) == n),
                       key=lambda u: (u.startswith("from "), u.split()[1].lower()))
                for n in range(3)]
    return "\n\n".join("\n".join(lines) for lines in sections if lines)


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def by_chapter(exercises):
    """{chapter: [exercises]} in chapter order."""
    groups = {}
    for ex in exercises:
        groups.setdefault(ex.chapter, []).append(ex)
    return dict(sorted(groups.items()))


def planned_files(exercises):
    """{relative path: text} of every file ``make exercises`` writes."""
    files = {}
    for chapter, group in by_chapter(exercises).items():
        name = CHAPTERS[chapter] + ".py"
        files[f"exercises/{name}"] = render(chapter, group, "stub")
        files[f"solutions/{name}"] = render(chapter, group, "solution")
    return files


def write_stubs(folder, exercises=None):
    """Fresh stub files of every chapter in ``folder`` (what an untouched clone holds)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in planned_files(collect() if exercises is None else exercises).items():
        if rel.startswith("exercises/"):
            (folder / Path(rel).name).write_text(text)
    return folder


def defined_functions(text):
    """Names of the top-level functions a Python file defines (by its text; a file that does not
    parse is read line by line)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set(re.findall(r"^(?:async )?def (\w+)\(", text, re.M))
    return {node.name for node in tree.body if isinstance(node,
                                                          (ast.FunctionDef, ast.AsyncFunctionDef))}


def missing_exercises(text, exercises):
    """The exercises whose function a (student-edited) chapter file does not define."""
    defined = defined_functions(text)
    return [ex for ex in exercises if ex.function_name not in defined]


def append_stubs(text, exercises):
    """``text`` with the stubs of ``exercises`` appended; the student's code above is untouched."""
    blocks = []
    for ex in exercises:
        imports = "\n".join(ex.uses)
        blocks.append((imports + "\n" if imports else "") + stub_section(ex))
    return text.rstrip("\n") + "\n\n\n" + "\n\n\n".join(blocks) + "\n"


def _edited(rel, current, manifest):
    return rel.startswith("exercises/") and _digest(current) != manifest.get(rel)


def write(repo_dir=None, package_dir=PACKAGE_DIR, out=sys.stdout):
    """Write solutions always, stubs unless a student edited them. Returns the kept (edited) paths.

    An edited stub file is never rewritten; the stub of an exercise it lacks is
    appended at its end.
    """
    repo_dir = Path(repo_dir or find_repository())
    manifest_path = repo_dir / "exercises" / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    exercises = collect(package_dir)
    groups = by_chapter(exercises)
    kept = []
    for rel, text in planned_files(exercises).items():
        path = repo_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.read_text() != text and _edited(rel, path.read_text(), manifest):
            kept.append(rel)
            current = path.read_text()
            chapter = next(c for c in groups if CHAPTERS[c] + ".py" == path.name)
            missing = missing_exercises(current, groups[chapter])
            if missing:
                path.write_text(append_stubs(current, missing))
                ids = ", ".join(ex.id for ex in missing)
                print(f"kept {rel} (your edits) and appended the stub of exercise {ids}", file=out)
            else:
                print(f"kept {rel}: it holds your edits (delete it to get a fresh stub)", file=out)
            continue
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {rel}", file=out)
        if rel.startswith("exercises/"):
            manifest[rel] = _digest(text)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return kept


def check(repo_dir=None, package_dir=PACKAGE_DIR):
    """Return a list of problems: files that are missing or differ from what would be written.

    A stub that a student has edited (its hash is not the one recorded when it
    was written) is not stale: it is the student's work. It is a problem only
    when it lacks an exercise that the library has (``make exercises`` appends it).
    """
    repo_dir = Path(repo_dir or find_repository())
    manifest_path = repo_dir / "exercises" / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    problems = []
    exercises = collect(package_dir)
    groups = by_chapter(exercises)
    planned = planned_files(exercises)
    for rel, text in planned.items():
        path = repo_dir / rel
        if not path.exists():
            problems.append(f"{rel} is missing")
            continue
        current = path.read_text()
        if current == text:
            continue
        if not _edited(rel, current, manifest):
            problems.append(f"{rel} is stale")
            continue
        chapter = next(c for c in groups if CHAPTERS[c] + ".py" == path.name)
        for ex in missing_exercises(current, groups[chapter]):
            problems.append(f"{rel} lacks exercise {ex.id} ({ex.function_name}); "
                            "`make exercises` appends its stub without touching your code")
    for folder in ("exercises", "solutions"):
        for path in sorted((repo_dir / folder).glob("ch*.py")):
            rel = f"{folder}/{path.name}"
            if rel not in planned:
                problems.append(f"{rel} has no exercises in the library any more")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; fail if exercises/ or solutions/ are stale")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        if problems:
            print("exercises/ and solutions/ are out of date with the library:")
            for p in problems:
                print(f"  - {p}")
            print("run `make exercises` (and commit the result if you maintain the library)")
            return 1
        print(f"exercises/ and solutions/ are up to date ({len(collect())} exercises)")
        return 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
