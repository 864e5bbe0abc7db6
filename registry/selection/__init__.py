"""Selection: which version should serve a task on this machine (criteria, measured profiles, the
selector), what tasks taught us (learnings), applications' reports (tracker) and the RL export.
"""

from registry.selection.criteria import Criteria, Weights
from registry.selection.learnings import TaskLearnings
from registry.selection.profiles import ProfileCache
from registry.selection.selector import LocalModelSelector, Selection
from registry.selection.tracker import PerformanceTrackerBridge

__all__ = ["Criteria", "LocalModelSelector", "PerformanceTrackerBridge", "ProfileCache", "Selection", "TaskLearnings", "Weights"]
