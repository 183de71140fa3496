"""Answers the grader must judge right, one file per chapter (see tests/test_answers.py)."""
