"""The segment-anything segmenter's model types are segment-anything's own registry (no
model built). The segmenter with a tiny random SAM is in
``tests/integration/test_sam_segmenter.py``."""

from __future__ import annotations

from annotators.sam_segmenter import SAM_MODEL_TYPES


def test_model_types_are_segment_anythings_registry():
    from segment_anything.build_sam import sam_model_registry

    assert set(SAM_MODEL_TYPES) == set(sam_model_registry)
