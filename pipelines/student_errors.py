"""Errors the refinement loop's student trainers share (``pipelines.refine``)."""

from __future__ import annotations

from engine.corpus import CorpusError


class NoTrainingLabels(CorpusError):
    """The iteration a student would learn from has no label to learn: ``fld refine``
    commits the next iteration with the specialists alone and records why in its
    ``run.json`` (``student_skipped``)."""


class StudentWeightsRefused(CorpusError):
    """A student's weights file is not the one its training summary records."""
