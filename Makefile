# Two commands matter: `make test` and `make bench`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The PyTorch releases this project is tested with. pyproject.toml keeps an open range for users;
# pinning them here makes pip take the copies that lie on the build machines' disk instead of
# downloading a newer multi-gigabyte build. Override with `make test TORCH_PIN=` to take any release.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: test bench docs api-docs reliability lint install clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(strip $(TORCH_PIN)),$(PY) -m pip install --quiet $(TORCH_PIN))
	$(PY) -m pip install --quiet -e ".[test,effnet]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(VENV)/bin/ruff check dfb_ood harness postprocessors networks configs tests benchmarks docs scripts
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check dfb_ood harness postprocessors networks configs tests benchmarks docs scripts

bench: $(VENV)/.installed
	$(VENV)/bin/harness bench

# The README's tables, timings and figures: fresh runs of the default bench (1 and 3 seeds), its
# from-scratch twin (--recipe cpu-quick) and the shapes benchmark into runs/docs/, their results
# copied to docs/results/ and docs/figures/, the README rewritten between make-docs markers, then the
# test that it matches. Every one uses a benchmark that ships with the package.
# `make docs DOCS_ARGS="--fmnist PATH/benchmark.yaml"` also runs the full fmnist-ood benchmark, when
# you have a copy (pretrained, pretrained with frozen-4x4 and from scratch, one seed each, about 25
# minutes on 2 cores).
DOCS_ARGS ?=
docs: $(VENV)/.installed
	$(PY) docs/make_docs.py $(DOCS_ARGS)
	$(PY) -m pytest -q tests/test_readme.py

# The Python API's reference (HTML, from the docstrings, by pdoc) into docs/api/ (git-ignored).
api-docs: $(VENV)/.installed
	$(PY) docs/api_docs.py docs/api

# docs/reliability.md: SIGKILL in every stage and at random points (results must equal an
# uninterrupted run), then ~165 bad and hostile inputs run as a user would, each under a time and
# memory limit (about 11 minutes on 2 cores).
reliability: $(VENV)/.installed
	$(PY) benchmarks/fault_battery.py --kills 12
	$(PY) benchmarks/bad_inputs.py

clean-venv:
	rm -rf $(VENV)
