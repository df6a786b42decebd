"""Filters, one file per family, registered here by their config key.

The registry drives the config: each key is a section of ``filters`` in the YAML (its
arguments are the filter class's fields, ``enabled`` turns it off). Each filter runs in
its ``stage`` (``engine.steps.STAGES``: region filters after the region annotators, text
filters after the captioners, phrase filters after the grounders); within a stage, in the
order of ``REGISTRY``: geometry (clip, then size and area), confidence, NMS (per source),
people's labels over the models' on reviewed images, then fusion (across sources),
each on the rows the previous ones kept.
"""

from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "geometry": "filters.geometry:GeometryFilter",
    "confidence": "filters.confidence:ConfidenceFilter",
    "nms": "filters.nms:NMSFilter",
    "human_review": "filters.human_review:HumanReviewFilter",
    "fusion": "filters.fusion:FusionFilter",
    "text_complexity": "filters.text_complexity:TextComplexityFilter",
    "phrase_confidence": "filters.phrase_confidence:PhraseConfidenceFilter",
}


def filter_class(key: str) -> type:
    module_name, class_name = REGISTRY[key].split(":")
    return getattr(importlib.import_module(module_name), class_name)
