# onenet: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Train on the embedded shapes set, then tour the four uses.
demo: $(STAMP)
	$(BIN)/onenet train
	$(BIN)/onenet tour

## The quick suite (slow-marked tests excluded).
test: $(STAMP)
	$(BIN)/python -m pytest

## Everything, slow quality checks included.
test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

clean:
	rm -rf onenet-data
