"""Composed runs: annotate one iteration (``pipelines.annotate``), and more as they land."""
