# The two commands of the README. Each creates .venv (if needed) and installs what it needs.
#   make demo       the Gradio demo on http://127.0.0.1:7860 (tiny embedded default when no weights
#                   are configured)
#   make test       run the test suite (what CI runs); as root with apt, installs Debian's chromium
#                   and chromium-driver for the browser test first
# Also: make generate (one InstantID generation from assets/faces/ into outputs/), make doctor,
#   make lock       re-resolve the newest versions inside pyproject's ranges into requirements.lock
#                   (then run `make test`: the lock is what CI proves).
VENV ?= .venv
PYTHON ?= python3
# torch goes in first and pinned, from PyPI unless TORCH_INDEX names a wheel index. PyPI's Linux
# wheels are CUDA builds (several GB); a CPU-only machine wants
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP_SPEC ?= pip==26.3
# Every other package at the exact version of requirements.lock, a pip constraints file: pip (and
# `uv pip`) read it natively with `-c`, and it constrains without adding requirements.
LOCK := requirements.lock
LOCK_VENV := build/lock-venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.idgen-installed
TORCH_ARGS = $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"

.PHONY: setup demo generate browser test doctor lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(PIP_SPEC)"
	$(PY) -m pip install -q $(TORCH_ARGS)
	$(PY) -m pip install -q -c $(LOCK) -e ".[demo,video,test]"
	touch $(STAMP)

# Newest versions inside pyproject's ranges, resolved in a throw-away venv; the lock lists all but
# idgen itself and torch (pinned above by TORCH_SPEC).
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q "$(PIP_SPEC)"
	$(LOCK_VENV)/bin/python -m pip install -q $(TORCH_ARGS)
	$(LOCK_VENV)/bin/python -m pip install -q ".[demo,video,test]"
	{ echo "# pip constraints for idgen's extras demo,video,test: written by \`make lock\` on $$(date -u +%F)"; \
	  echo "# ($$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version(), platform.system(), platform.machine())')); torch is pinned by TORCH_SPEC in the Makefile."; \
	  $(LOCK_VENV)/bin/python -m pip freeze | grep -viE '^(idgen|torch)( @|==)'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)
	@echo "wrote $(LOCK); now run: make test"

demo: setup
	$(VENV)/bin/idgen demo

generate: setup
	$(VENV)/bin/idgen generate --method instantid --face assets/faces/portrait_glasses.jpg \
		--pose assets/faces/pose_fullbody_b.jpg --prompt "photo of a person in a garden" --out outputs --overwrite

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
