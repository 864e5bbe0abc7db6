"""Training a custom model from a task's own data: the training set checked against the task's
expectations (and kept apart from its validation set), a small classifier trained and exported to
ONNX with its provenance (docs/custom-models.md)."""

from registry.training.data import TrainingData, check_training_data
from registry.training.text_classifier import TrainedClassifier, train_text_classifier

__all__ = ["TrainedClassifier", "TrainingData", "check_training_data", "train_text_classifier"]
