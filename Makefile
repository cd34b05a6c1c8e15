# kineto: `make demo` runs the main job, `make test` the test suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,demo]"
	@touch $(STAMP)

# Until the end-to-end video demo lands: train the tiny prefix-LM on a real text corpus.
demo: $(STAMP)
	$(BIN)/kineto lm train --config configs/lm_tiny.py --workdir outputs/demo/lm_tiny --set train.steps=300

# pytest exits 5 when it collected no tests: an empty or unimportable suite is a failure.
test: $(STAMP)
	@$(BIN)/python -m pytest -q; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status

bench: $(STAMP)
	@for f in bench/*.py; do case $$f in */common.py) continue;; esac; \
	  echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) outputs *.egg-info
