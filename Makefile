# The two commands of the README. Each creates .venv (if needed) and installs what it needs.
#   make demo       the Gradio demo on http://127.0.0.1:7860 (tiny embedded default when no weights
#                   are configured)
#   make test       run the test suite (what CI runs); as root with apt, installs Debian's chromium
#                   and chromium-driver for the browser test first
# Also: make generate (one InstantID generation from assets/faces/ into outputs/), make doctor.
VENV ?= .venv
PYTHON ?= python3
# torch goes in first and pinned: an unpinned `torch` pulls a multi-GB CUDA build on CPU machines.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.idgen-installed

.PHONY: setup demo generate browser test doctor clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[demo,video,test]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/idgen demo

generate: setup
	$(VENV)/bin/idgen generate --method instantid --face assets/faces/portrait_glasses.jpg \
		--pose assets/faces/pose_fullbody_b.jpg --prompt "photo of a person in a garden" --out outputs

# Debian's headless browser for tests/test_demo_browser.py (never downloaded by a test tool). Without
# root or apt the browser test skips and says why (unless IDGEN_REQUIRE_BROWSER=1, as in CI).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	else echo "note: chromium/chromium-driver are not installed and cannot be here (not root or no apt): the browser test will skip"; fi

test: setup browser
	$(PY) -m pytest -q

doctor: setup
	$(VENV)/bin/idgen doctor

clean:
	rm -rf $(VENV) build *.egg-info
