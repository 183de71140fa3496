"""``python -m attention_scratch.exercise_tools``: kept for old commands; see :mod:`attention_scratch.course.exercises`."""
import sys

from .course.exercises import *  # noqa: F401,F403
from .course.exercises import main

if __name__ == "__main__":
    sys.exit(main())
