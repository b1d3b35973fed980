# Two commands on a fresh machine: `make demo` and `make test`. Both (re)build .venv/ when it is
# missing or older than any dependency file; otherwise setup is a no-op.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.geo-rs-installed
DEPS    := setup.py requirements.txt constraints.txt scripts/setup_env.sh

.PHONY: setup demo test lint bench clean gpu-check

setup: $(STAMP)

$(STAMP): $(DEPS)
	@bash scripts/setup_env.sh "$(PY)" "$(VENV)"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/geo-rs nerf demo --out runs/demo

# Two pytest-xdist workers: the suite is CPU-bound and tests of tiny models use one torch thread each.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) tests

lint: $(STAMP)
	$(BIN)/ruff check geo_rs nerf keypoint scripts tests bench

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# CUDA paths (nerfacc estimator, Smooth, blur) on a GPU machine; builds its own .venv-gpu/ if needed
gpu-check:
	@bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) runs
