# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint check-migrations clean

# The virtualenv is rebuilt whenever requirements.txt changes.
$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# A local secret so the gateway runs with DEBUG off, as in production.
.env:
	@echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" > .env
	@echo "wrote .env with a fresh SECRET_KEY"

run: $(BIN)/.installed .env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py seed_entities
	$(BIN)/python manage.py ensure_admin
	PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py gateway_project.wsgi:application

# DEBUG and SECRET_KEY get test values unless the caller set them; DATABASE_URL is used when set.
test: $(BIN)/.installed
	DEBUG=$${DEBUG:-true} SECRET_KEY=$${SECRET_KEY:-test-secret-key} $(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=true $(BIN)/mypy entities gateway_project edits_api

check-migrations: $(BIN)/.installed
	DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) staticfiles
