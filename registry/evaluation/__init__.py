"""Evaluation: the tasks, their validation sets and Great Expectations suites, prompts and scoring;
benchmarking a version on a task; the LLM judge with its rubrics and calibration; and the
compatibility matrix built from deployed benchmarks.
"""

from registry.evaluation.benchmark import BenchmarkResult, benchmark_version
from registry.evaluation.datasets import ValidationSet, load_validation_set
from registry.evaluation.judge import ModelBasedJudge

__all__ = ["BenchmarkResult", "ModelBasedJudge", "ValidationSet", "benchmark_version", "load_validation_set"]
