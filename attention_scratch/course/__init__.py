"""Course tooling: exercise generation, grading, notebooks and the page checks.

Nothing in a chapter depends on this subpackage for teaching; it is how the
exercises are written out, graded (in child processes that student code cannot
break) and kept off the chapter pages.
"""
