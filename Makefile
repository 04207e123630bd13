# The two commands of the README. Each creates .venv (if needed) and installs what it needs.
#   make generate   InstantID generation from assets/faces/ into outputs/ (tiny embedded default
#                   when no weights are configured)
#   make test       run the test suite (what CI runs)
VENV ?= .venv
PYTHON ?= python3
# torch goes in first and pinned: an unpinned `torch` pulls a multi-GB CUDA build on CPU machines.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.idgen-installed

.PHONY: setup generate test doctor clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[demo,video,test]"
	touch $(STAMP)

generate: setup
	$(VENV)/bin/idgen generate --method instantid --face assets/faces/portrait_glasses.jpg \
		--pose assets/faces/pose_fullbody_b.jpg --prompt "photo of a person in a garden" --out outputs

test: setup
	$(PY) -m pytest -q

doctor: setup
	$(VENV)/bin/idgen doctor

clean:
	rm -rf $(VENV) build *.egg-info
