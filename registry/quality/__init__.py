"""Live quality: what a route's answers are worth, measured while it serves, and the test that
decides a swap on it.

Signals (each a row of the ``feedback`` table, joined to its ``calls`` row): an application's or a
person's feedback, the task's reference-free live scorers, and the judgment route's judge while its
calibration meets the floor. ``sequential`` compares a challenger with the champion on them with a
test that stays valid however often it is looked at (docs/rollout.md).
"""
