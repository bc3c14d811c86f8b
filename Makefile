# The two commands: `make run` (everything up, demo data, URLs printed) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Development installs requirements-dev.txt (the runtime file plus tools); the image, runtime only.
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)

.PHONY: run test lint format install migrate seed clean test-tools manage

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_demo

# devstack seeds the demo data itself and prints the accounts with every other credential.
run: migrate
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) -m project.devstack

# An operator's manage.py command with the venv and the settings `make run` uses, e.g.
# make manage ARGS="replay_order <id>"   (bin/orderflow replay_order <id> is the same)
manage: install
	bin/orderflow $(ARGS)

# --no-cache and no pytest cache: `make test` leaves nothing in the checkout.
lint: install
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --no-cache --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Debian's chromium (the tracking-page browser test) and docker-compose (validates the compose
# file); installed with apt when running as root and missing. Their tests skip with a reason
# where they cannot be had.
test-tools:
	@missing=""; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing$$missing with apt"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) \
			>/dev/null || echo "apt could not install$$missing; those tests will skip"; \
	fi

test: lint test-tools
	$(PY) -m pytest -p no:cacheprovider

clean:
	rm -rf $(VENV) db.sqlite3* .pytest-db* staticfiles
