# apslab: `make lab` to learn, `make test` to check everything. Both install into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip --disable-pip-version-check
NBVAL  := --nbval --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider
# Debian's chromium, when installed: the browser tests (tests/test_browser.py) then run as part
# of `make test` and must pass; without it they are skipped. CI (.ci/run) installs it and sets
# APSLAB_BROWSER_TEST=1 itself, so a browser that cannot start fails there.
CHROMIUM := $(firstword $(shell command -v chromium 2>/dev/null) $(wildcard /usr/bin/chromium))
export APSLAB_BROWSER_TEST ?= $(if $(CHROMIUM),1,0)
INSTALL_CHROMIUM := command -v chromium >/dev/null || test -x /usr/bin/chromium || \
	(apt-get update -qq && apt-get install -y -qq chromium)

.PHONY: install lab test test-unit test-notebooks test-browser screenshots release notebooks \
	bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py apslab/core/_bucket_walk.c apslab/sim/_eventloop.c \
	apslab/core/_bucket_step.h
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "apslab needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[lab,plan,serve,teach,dev]'
	touch $(STAMP)

## lab: install, then open JupyterLab on the first notebook
lab: install
	cd notebooks && ../$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) 00_overview.ipynb

## test: install, then run every test: unit, property, CLI, benchmarks smoke, the nbgrader
## release, the browser tests (when chromium is installed), notebooks (strict nbval)
test: install
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest $(NBVAL) notebooks

test-unit: install
	$(BIN)/python -m pytest tests

test-notebooks: install
	$(BIN)/python -m pytest $(NBVAL) notebooks

## test-browser: every widget notebook in JupyterLab in headless Chromium (installs chromium)
test-browser: install
	@$(INSTALL_CHROMIUM)
	APSLAB_BROWSER_TEST=1 $(BIN)/python -m pytest tests/test_browser.py

## screenshots: the browser tests, saving each notebook's main widget to docs/gallery/ (README)
screenshots: install
	@$(INSTALL_CHROMIUM)
	APSLAB_BROWSER_TEST=1 APSLAB_SCREENSHOTS=docs/gallery $(BIN)/python -m pytest tests/test_browser.py

## release: the students' notebooks without solutions, in an nbgrader course directory, release/
release: install
	$(BIN)/python -m apslab.lab.release --course release

## notebooks: re-execute every notebook in place so stored outputs match the code
notebooks: install
	$(BIN)/python -m apslab.lab.notebook_runner notebooks/*.ipynb

## bench: speed and memory against the SimPy baseline; writes benchmarks/RESULTS.md and docs/performance.md's figures
bench: install
	$(BIN)/python benchmarks/run.py

lint: install
	$(BIN)/ruff check apslab tests benchmarks

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
