"""Where the repository is: the grader and the exercise tools need a clone, not only the package.

The graded tests (``tests/exercises/``), the stubs (``exercises/``) and the
answers (``solutions/``) live in the repository beside the package. They are
found, in this order, through ``$ATTENTION_SCRATCH_REPO``, the folder above the
package (a clone with an editable install), or the current folder and its
parents. Outside a clone the tools say so instead of failing later.
"""
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
ENV_VAR = "ATTENTION_SCRATCH_REPO"
_MARKERS = ("tests/exercises", "_toc.yml", "book")


class NotAClone(RuntimeError):
    """The course tools were run where no clone of the repository can be found."""


def is_repository(folder):
    """True when ``folder`` holds the repository's graded tests, table of contents and book."""
    folder = Path(folder)
    return all((folder / marker).exists() for marker in _MARKERS)


def find_repository(start=None):
    """The root of the clone the course tools work on;
    raises :class:`NotAClone` if there is none."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        if not is_repository(explicit):
            raise NotAClone(f"${ENV_VAR} is {explicit!r}, which is not a clone of "
                            f"attention_scratch (it lacks {', '.join(_MARKERS)})")
        return Path(explicit).resolve()
    candidates = [PACKAGE_DIR.parent]
    here = Path(start or os.getcwd()).resolve()
    candidates += [here, *here.parents]
    for folder in candidates:
        if is_repository(folder):
            return folder
    raise NotAClone(
        "the graded tests, stubs and solutions live in a clone of the repository, and none was "
        f"found above {here} or beside the installed package ({PACKAGE_DIR}). Clone it "
        f"(see pyproject.toml [project.urls]) and run from inside it, or set ${ENV_VAR}.")
