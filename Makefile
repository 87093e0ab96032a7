# DGM Explorer. Two commands: `make run` (set up and start the app), `make test` (set up and test).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# the address the app listens on: this machine only by default. To serve a class on the network, say so:
# `make run HOST=0.0.0.0` (every interface; there is no login, so only on a network you trust)
HOST ?= 127.0.0.1
# pytest-xdist processes: one per CPU, at least 2, at most 8; the browser tests take one of them up to three
# workers, then one per two (tests/conftest.py: browser_groups)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 2 ? 2 : (n > 8 ? 8 : n) )))
export PYTHONDONTWRITEBYTECODE := 1
# fewer malloc arenas: the server's session threads then hand freed memory back (load test: +1 MB
# per session instead of +5 MB, measured with bench/load_test.py)
export MALLOC_ARENA_MAX := 2

.PHONY: run test test-lessons setup setup-test browser bench screenshots clean

$(VENV)/.run-deps: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# plotly's cartesian partial bundle of plotly.js, a third of the full one (dgm/ui/plotlyjs.py); where it cannot be
# fetched (offline), the app serves the full bundle from the plotly package, and this is tried again next time
PLOTLYJS := $(VENV)/share/dgm/plotlyjs/plotly.min.js
$(PLOTLYJS): $(VENV)/.run-deps
	$(PY) -m dgm.ui.plotlyjs

$(VENV)/.test-deps: $(VENV)/.run-deps requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

setup: $(VENV)/.run-deps $(PLOTLYJS)

setup-test: $(VENV)/.test-deps $(PLOTLYJS) browser

## Debian's chromium for the browser tests and PNG export (installed when missing and possible)
browser:
	@bash scripts/ensure-chromium.sh

# every lesson's fast-forward trained ahead (kept on disk: a lesson then opens at once), beside the server and
# at the lowest priority
run: setup
	@nice -n 19 $(PY) -m dgm prepare --quiet </dev/null >/dev/null 2>&1 &
	$(PY) -m streamlit run app.py --server.address $(HOST) --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

test: setup-test
	$(PY) -m ruff check --select F,E9 --quiet app.py pages dgm tests bench
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

## every lesson that watches a number, played to its point in the browser (make test plays four of them)
test-lessons: setup-test
	$(PY) -m pytest -n $(TEST_WORKERS) tests/test_browser_classroom.py -k lesson_reaches -m ""

## rewrite the screenshot baselines in tests/screenshots/
screenshots: setup-test
	$(PY) -m pytest tests/test_screenshots.py --update-screenshots

bench: setup-test
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache bench/out
