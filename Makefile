# attention_scratch — see README.md. Every target creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
CHAPTER ?=
TARGET ?= exercises

.PHONY: help venv book test test-fast grade exercises check-exercises notebooks check-notebooks lab bench clean

help:
	@echo "make book        build the whole book (executes every chapter); prints the path to open"
	@echo "make test        the whole suite: ruff, library, graded exercises, stubs, exercise freshness"
	@echo "make grade       grade your exercises (CHAPTER=1 for one chapter, TARGET=solutions for the answers)"
	@echo "make exercises   regenerate exercises/ and solutions/ from the library (never overwrites your edits)"
	@echo "make notebooks   write .ipynb notebooks of every chapter, exercises graded in place, into notebooks/"
	@echo "make lab         open the notebooks in Jupyter Lab"
	@echo "make bench       run the benchmarks (BENCH_ARGS=\"--sizes 2048 --repeats 9\" for the quick check)"
	@echo "make clean       remove the build, caches and .venv"

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(TSTAMP): $(STAMP) requirements-test.txt
	$(PIP) install --quiet -r requirements-test.txt
	touch $@

venv: $(STAMP)

book: $(STAMP)
	rm -rf _build
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going
	$(PY) -m attention_scratch.course.pages _build/html
	@echo
	@echo "The book is built. Open: $(CURDIR)/_build/html/index.html"

# Ruff (pyproject.toml's rules), the library's tests, then the reference answers graded once (the
# student's exercises/ never are).
test: $(TSTAMP)
	$(PY) -m ruff check .
	$(PY) -m attention_scratch.course.exercises --check
	$(PY) -m pytest tests --ignore=tests/exercises --ignore=tests/test_answers.py --durations=20
	$(PY) -m pytest tests/test_answers.py -q -n auto --durations=20
	$(PY) -m attention_scratch.grade --solutions --require-full --quiet

grade: $(STAMP)
	$(PY) -m attention_scratch.grade $(if $(filter solutions,$(TARGET)),--solutions) $(if $(CHAPTER),--chapter $(CHAPTER))

exercises: $(STAMP)
	$(PY) -m attention_scratch.course.exercises

check-exercises: $(STAMP)
	$(PY) -m attention_scratch.course.exercises --check

# Notebooks with every exercise as a code cell graded in place; a notebook you changed is kept.
notebooks: $(STAMP)
	$(PY) -m attention_scratch.course.notebooks

# Executes every notebook from notebooks/ and checks each exercise reports "not started" (CI).
check-notebooks: $(STAMP)
	$(PY) -m attention_scratch.course.notebooks --check

lab: notebooks
	$(PIP) install --quiet "jupyterlab>=4,<5"
	cd notebooks && ../$(VENV)/bin/jupyter lab

# The benchmark (chapter 12). OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, if set on a machine, pin
# OpenBLAS to a slower kernel; they are cleared for this command only. OPENBLAS_THREAD_TIMEOUT=4
# puts OpenBLAS's worker threads to sleep soon after each call: by default they spin for a while
# after the NumPy contenders' BLAS calls and take a core from the Numba kernel timed next (measured:
# Numba forward 0.65x PyTorch with spinning threads, 1.04x without, same process and machine).
# BENCH_ARGS adds options, for example: make bench BENCH_ARGS="--sizes 2048 --repeats 9"
BENCH_ARGS ?=
bench: $(TSTAMP)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_THREAD_TIMEOUT=4 $(PY) -m attention_scratch.bench $(BENCH_ARGS)

# Removes what make made; notebooks holding your work are kept (and named). A Jupyter kernel that
# an older version of this Makefile registered for this clone is removed too.
clean:
	-test -x $(PY) && $(PY) -m attention_scratch.course.notebooks --clean
	-k="$$($(VENV)/bin/jupyter --data-dir 2>/dev/null || echo $$HOME/.local/share/jupyter)/kernels/attention_scratch"; \
	  grep -qs "$(CURDIR)/$(VENV)/" "$$k/kernel.json" && rm -rf "$$k"
	rm -rf _build .cache .pytest_cache .hypothesis $(VENV)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Differential fuzz (tests/test_fuzz.py): every backend against PyTorch float64 autograd, NaN/inf at
# visible and hidden places, empty dimensions, extreme logits, float16. Hypothesis profile "fuzz"
# (tests/conftest.py), repeated for FUZZ_SECONDS seconds per backend (4 backends: 10 minutes in all);
# each backend prints how many cases it ran. `make test` runs the same test with a small budget.
FUZZ_SECONDS ?= 150
.PHONY: fuzz
fuzz: $(TSTAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest tests/test_fuzz.py -s -q --timeout=0
