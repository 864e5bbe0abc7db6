"""The machine: what it is (fingerprint, hardware class, accelerators, the one rule for whether a
version can run here) and what one operation costs on it (CPU, memory, GPU, energy with its source).
"""

from registry.machine.costs import Cost, measure, stopwatch
from registry.machine.hardware import HardwareFingerprint, Machine, fingerprint, shortfalls, this_machine

__all__ = ["Cost", "HardwareFingerprint", "Machine", "fingerprint", "measure", "shortfalls", "stopwatch", "this_machine"]
