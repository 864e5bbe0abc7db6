"""Training a custom model from a task's own data: the training set checked against the task's
expectations (and kept apart from its validation set), a small classifier trained and exported to
ONNX with its provenance (docs/custom-models.md)."""
