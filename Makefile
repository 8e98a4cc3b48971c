# onenet: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lock demo test test-all test-cpus lint bench bench-scale bench-against bench-full server browser postgres clean

# Installs come from requirements.lock (every package, exact versions), so a fresh machine gets
# what the tests ran on; pip-sync then removes anything the lock does not name. onenet itself is
# installed editable, without dependencies (they are all in the lock).
$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$$(grep '^pip==' requirements.lock)"
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip-sync --quiet requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## requirements.lock from pyproject.toml (keeps the current pins that still fit;
## `make lock ARGS=--upgrade` takes the newest allowed). Then `make install`.
lock:
	test -x $(BIN)/pip-compile || $(MAKE) install
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --extra dev --strip-extras --allow-unsafe \
	  --no-emit-find-links --no-emit-index-url -o requirements.lock $(ARGS) pyproject.toml

## Train on the embedded shapes set, then tour the four uses.
demo: $(STAMP)
	$(BIN)/onenet train
	$(BIN)/onenet tour

## The quick suite (slow-marked tests excluded).
test: $(STAMP)
	$(BIN)/python -m pytest

## The tests whose results hang on float kernels and thread counts (model, beam search, imagine,
## search, evaluation floors), again as other machines would compute them: PyTorch, oneDNN and MKL
## told to use only AVX2 kernels, on ONE torch thread (ONENET_THREADS=1: training, evaluation and
## shards); then PyTorch's baseline kernels (no AVX2; MKL and oneDNN keep theirs) on every core.
## With the plain `make test` (this CPU's own kernels, every core) each result is computed three
## ways, and one that holds on one CPU or one thread count only fails here. The quality figures each test measured are printed side by
## side at the end.
CPU_SENSITIVE := tests/test_models.py tests/test_beam.py tests/test_imagine.py tests/test_search.py tests/test_pipeline.py \
	tests/test_evaluate.py::test_the_decoder_beats_the_nearest_neighbour_baseline_on_held_out_scenes \
	tests/test_picture.py::test_imagined_pictures_show_the_asked_colour_and_shape
AVX2_ONE_THREAD := ONENET_THREADS=1 OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
test-cpus: $(STAMP)
	mkdir -p test-output
	$(AVX2_ONE_THREAD) $(BIN)/python -m pytest $(CPU_SENSITIVE) --junitxml=test-output/cpus-avx2-1thread.xml
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest $(CPU_SENSITIVE) --junitxml=test-output/cpus-default.xml
	$(BIN)/python -m tests.margins test-output/cpus-avx2-1thread.xml test-output/cpus-default.xml

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

## Debian's PostgreSQL server programs, for `onenet server --postgres` (root, apt).
postgres:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql \
	  || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql)

clean:
	rm -rf onenet-data
