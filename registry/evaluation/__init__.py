"""Evaluation: the tasks users declare in task files, their validation sets and Great Expectations suites, prompts and scoring;
benchmarking a version on a task; the LLM judge with its rubrics and calibration; and the
compatibility matrix built from deployed benchmarks.
"""

from registry.evaluation.benchmark import BenchmarkResult, benchmark_version
from registry.evaluation.judge import ModelBasedJudge
from registry.evaluation.tasks import TaskCatalog, TaskVersion

__all__ = ["BenchmarkResult", "ModelBasedJudge", "TaskCatalog", "TaskVersion", "benchmark_version"]
