# `make run` starts the app on the embedded default; `make test` runs the tests.
# Both create the virtualenv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench bench-capacity messages clean

run: $(VENV)/.installed
	$(BIN)/python scripts/run.py

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/python scripts/ensure_browser.py
	@if command -v npm >/dev/null 2>&1; then \
		cd tests/oidc_provider && npm ci --no-audit --no-fund --silent; \
	else \
		echo "npm not found: the single sign-on tests will be skipped"; \
	fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/stream_latency.py

.PHONY: bench-img2latex bench-capacity bench-polish bench-api bench-load
bench-img2latex: $(VENV)/.installed-dev
	$(BIN)/python bench/img2latex.py

bench-capacity: $(VENV)/.installed-dev
	$(BIN)/python bench/capacity.py

bench-polish: $(VENV)/.installed-dev
	$(BIN)/python bench/polish.py

bench-api: $(VENV)/.installed-dev
	$(BIN)/python bench/api_overhead.py

bench-load: $(VENV)/.installed-dev
	$(BIN)/python bench/load.py

# Regenerate the translation catalogues after changing translated strings.
messages: $(VENV)/.installed
	$(BIN)/python manage.py makemessages -l zh_Hans --no-location --ignore ".venv/*" --ignore "var/*" --ignore "*/node_modules/*"
	$(BIN)/python manage.py compilemessages -l zh_Hans --ignore ".venv"

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) var tests/oidc_provider/node_modules
