# onenet: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all test-cpus lint bench bench-scale bench-against bench-full server browser clean

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

## The tests whose results hang on float kernels (model, beam search, imagine, search), again as
## a CPU without AVX-512 and one without AVX2 would compute them: PyTorch and oneDNN told to use
## only AVX2, then only baseline kernels. A result that holds on one CPU only fails here. The
## quality figures each test measured are printed side by side at the end.
CPU_SENSITIVE := tests/test_models.py tests/test_beam.py tests/test_imagine.py tests/test_search.py tests/test_pipeline.py \
	tests/test_picture.py::test_imagined_pictures_show_the_asked_colour_and_shape
test-cpus: $(STAMP)
	mkdir -p test-output
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m pytest $(CPU_SENSITIVE) --junitxml=test-output/cpus-avx2.xml
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest $(CPU_SENSITIVE) --junitxml=test-output/cpus-default.xml
	$(BIN)/python -m tests.margins test-output/cpus-avx2.xml test-output/cpus-default.xml

## ruff (pyflakes, import order, bugbear) and the layer contracts of pyproject.toml (import-linter).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

## Everything, slow quality checks included.
test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

## Speed, side by side in one run: ratios against the article's way and the machine's bounds
## (under 10 minutes on 2 cores); the table also lands in BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python -m bench

## onenet at 100,000 photos (1,000,000: make bench-scale ARGS=--full): ingest, search, SQL and memory
## at that size against the same at 8,000, in one run (bench/scale.py).
bench-scale: $(STAMP)
	$(BIN)/python -m bench --only scale $(ARGS)

## This checkout against an earlier commit (default: the code of the day issue 17 was filed):
## ingest of 1,000 new photos into 8,000, both versions in one run (bench/against.py; ~10 minutes).
bench-against: $(STAMP)
	$(BIN)/python -m bench.against $(or $(REV),e20f2a9) $(ARGS)

## Longer: HNSW at 1M vectors and RSICD's real photos (../shared/data/rsicd) when present.
bench-full: $(STAMP)
	$(BIN)/python -m bench --full

## The Prefect server (API + UI on http://127.0.0.1:4200) for ./onenet-data; flows report to it.
server: $(STAMP)
	$(BIN)/onenet server

## Debian's Chromium for the headless browser test (root; Playwright drives /usr/bin/chromium).
browser:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
	  || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

clean:
	rm -rf onenet-data
