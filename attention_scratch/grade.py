"""``python -m attention_scratch.grade``:
grade the exercises (see :mod:`attention_scratch.course.grader`)."""
import sys

from .course.grader import main

if __name__ == "__main__":
    sys.exit(main())
