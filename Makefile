# Two entry points a new user needs, plus the pieces CI runs.
#   make quickstart   train instance-only and AND on scikit-learn's digits, print the table
#   make test         create .venv if needed, install the package with its test extras, run pytest
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= -q
PYTEST_ARGS ?=

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install $(PIP_FLAGS) -e ".[dev]"
	touch $@

.PHONY: install quickstart test docs clean
install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(PY) recipes/quickstart.py

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

docs: $(VENV)/.installed
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf docs/_build .pytest_cache
