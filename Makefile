# The two commands of the README. Each creates .venv (if needed) and installs what it needs.
#   make demo   start the Gradio demo on 127.0.0.1 (tiny embedded default if no weights configured)
#   make test   run the test suite
VENV ?= .venv
PYTHON ?= python3
# torch goes in first and pinned: an unpinned `torch` pulls a multi-GB CUDA build on CPU machines.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.idgen-installed

.PHONY: setup demo test doctor clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[demo,video,test]"
	touch $(STAMP)

demo: setup
	$(PY) app.py

test: setup
	$(PY) -m pytest -q

doctor: setup
	$(VENV)/bin/idgen doctor

clean:
	rm -rf $(VENV) build *.egg-info
