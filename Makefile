# Two commands matter: `make test` and `make bench`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The PyTorch releases this project is tested with. pyproject.toml keeps an open range for users;
# pinning them here makes pip take the copies that lie on the build machines' disk instead of
# downloading a newer multi-gigabyte build. Override with `make test TORCH_PIN=` to take any release.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: test bench lint install clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(strip $(TORCH_PIN)),$(PY) -m pip install --quiet $(TORCH_PIN))
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(VENV)/bin/ruff check harness postprocessors networks configs tests benchmarks
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check harness postprocessors networks configs tests benchmarks

bench: $(VENV)/.installed
	$(VENV)/bin/harness bench

clean-venv:
	rm -rf $(VENV)
