"""Specialist annotators, one file each, registered here by name.

The registry maps a config name to ``module:Class``; modules are imported only when a
config names them, and heavy libraries only in ``setup()``.
"""

from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "ssd_coco": "annotators.ssd_coco:SSDCocoDetector",
    "yolo": "annotators.yolo:YoloDetector",
    "rapidocr": "annotators.rapidocr_ocr:RapidOCRReader",
    "region_captioner": "annotators.region_captioner:RegionCaptioner",
    "dense_captioner": "annotators.dense_captioner:DenseRegionCaptioner",
    "hf_captioner": "annotators.hf_captioner:HFCaptioner",
    "phrase_extractor": "annotators.phrase_extractor:PhraseExtractor",
    "embedding_grounder": "annotators.embedding_grounder:EmbeddingGrounder",
    "grabcut_segmenter": "annotators.grabcut_segmenter:GrabCutSegmenter",
    "replay": "annotators.replay:CorpusReplay",
    "human_labels": "annotators.human_labels:HumanLabels",
    "sam_segmenter": "annotators.sam_segmenter:SamSegmenter",
    "hf_grounder": "annotators.hf_grounder:HFGrounder",
    "hold": "annotators.hold:HoldAnnotator",
    "florence2_regions": "annotators.florence2_regions:Florence2Regions",
    "florence2_segmenter": "annotators.florence2_segmenter:Florence2Segmenter",
    "chaos": "annotators.chaos:ChaosAnnotator",
}


def annotator_class(name: str) -> type:
    try:
        module_name, class_name = REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"unknown annotator {name!r}; known: {sorted(REGISTRY)}") from None
    return getattr(importlib.import_module(module_name), class_name)
