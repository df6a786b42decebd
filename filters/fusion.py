"""Weighted boxes fusion across sources ("wisdom of crowds", FLD-5B's region merging).

Among the kept regions of the fused ``kinds`` of one image, boxes of the same
(normalised) label are clustered greedily in order of weighted score: a box joins the
cluster whose fused box it overlaps by more than ``iou_threshold`` (IoU from
``torchvision.ops.box_iou``), else starts one. Each cluster becomes one new region:

- box: the average of its members' boxes weighted by ``weight(source) * score``;
- score, by ``score_rule`` — the same rule on every image, whoever else annotated it:

  - ``mean`` (default): the weighted mean, over the sources in the cluster, of each
    source's best member score. A box one source saw keeps that source's score; a box two
    sources saw gets their weighted average. Agreement is not paid in score but recorded:
    ``sources`` and ``n_sources``, which SQL can filter on.
  - ``wbf``: WBF's absence penalty with a fixed denominator: ``sum over the sources in
    the cluster of weight * best score``, divided by the total weight of
    ``expected_sources`` (every source the run is expected to have, e.g. the specialists
    and the student). A box one of two equal sources saw gets half its score on every
    image alike — also on images where the other source kept nothing (so with ``wbf``
    every image is fused, even one whose boxes come from one source).

  An earlier rule divided by the weight of the sources that had rows on *this* image: a
  single kept student box anywhere halved every specialist-only box of that image while
  images the student left empty kept full scores. Both rules above avoid that.
- ``source = "fused"``, ``sources``: the contributing sources, ``n_sources`` their count.

Members stay in the table, dropped with ``fused_into``; fused boxes under ``min_score``
are dropped with ``low_score``. Then NMS among the image's fused boxes (same label,
``torchvision.ops.batched_nms`` at ``iou_threshold``): clusters whose averaged boxes drifted
onto each other leave one box, the others are dropped with ``nms``. With ``mean``, images
whose candidates come from a single source are left alone (nothing to fuse).

Why not ``ensemble-boxes``: its ``weighted_boxes_fusion`` returns fused boxes without
saying which input boxes formed each, and the corpus keeps every absorbed box as a row
with ``fused_into`` and fills ``sources``/``n_sources`` on the fused one.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

from engine.boxes import iou_matrix
from engine.records import Region, Sample
from engine.steps import STRICT
from filters.base import Decision, RegionFilter


@dataclass(config=STRICT)
class FusionFilter(RegionFilter):
    """Args:
    iou_threshold: a box joins a cluster whose fused box it overlaps by more than this.
    weights: per-source weights (``name@version`` or ``name``; students match by their
        name prefix, e.g. ``student``); others weigh ``default_weight``.
    default_weight: weight of a source not in ``weights``.
    label_map: label normalisation across sources (applied after lowercasing), e.g.
        ``{people: person, motorbike: motorcycle}``.
    min_score: fused boxes under this are dropped (``low_score``).
    kinds: region kinds fused.
    score_rule: ``mean`` or ``wbf`` (see the module docstring).
    expected_sources: for ``wbf``: the sources whose total weight divides every fused
        score (``name@version`` or a name prefix matched like ``weights``).
    """

    name: ClassVar[str] = "fusion"

    iou_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.55
    weights: dict[str, Annotated[float, Field(gt=0.0)]] = Field(default_factory=dict)
    default_weight: Annotated[float, Field(gt=0.0)] = 1.0
    label_map: dict[str, str] = Field(default_factory=dict)
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    kinds: list[str] = Field(default_factory=lambda: ["object"])
    score_rule: Literal["mean", "wbf"] = "mean"
    expected_sources: list[str] = Field(default_factory=list)

    def __post_init__(self) -> None:
        if self.score_rule == "wbf" and not self.expected_sources:
            raise ValueError("score_rule wbf needs expected_sources (the run's sources)")

    def weight(self, source: str) -> float:
        bare = source.split("@", 1)[0]
        for key in (source, bare):
            if key in self.weights:
                return self.weights[key]
        for key, value in self.weights.items():
            if bare.startswith(key):
                return value
        return self.default_weight

    def normalise(self, label: str) -> str:
        label = " ".join(label.lower().split())
        return self.label_map.get(label, label)

    def decide(self, sample: Sample, items: list[Region]) -> list[Decision]:
        decisions: list[Decision] = [True] * len(items)
        candidates = [
            i for i, r in enumerate(items) if r.kind in self.kinds and r.source != "fused"
        ]
        if not candidates:
            return decisions
        if self.score_rule == "mean" and len({items[i].source for i in candidates}) < 2:
            return decisions
        order = sorted(candidates, key=lambda i: -self.weight(items[i].source) * items[i].score)
        clusters: list[dict] = []
        for i in order:
            region = items[i]
            label = self.normalise(region.label)
            same = [c for c in clusters if c["label"] == label]
            best = None
            if same:
                ious = iou_matrix([region.box], [c["box"] for c in same])[0]
                top = int(np.argmax(ious))
                if float(ious[top]) > self.iou_threshold:
                    best = same[top]
            if best is None:
                best = {"label": label, "members": []}
                clusters.append(best)
            best["members"].append(i)
            best["box"] = self.fused_box([items[m] for m in best["members"]])
        for cluster in clusters:
            members = [items[m] for m in cluster["members"]]
            best_per_source: dict[str, float] = {}
            for member in members:
                best_per_source[member.source] = max(
                    best_per_source.get(member.source, 0.0), member.score
                )
            weighted = sum(self.weight(s) * v for s, v in best_per_source.items())
            if self.score_rule == "wbf":
                score = weighted / sum(self.weight(s) for s in self.expected_sources)
            else:
                score = weighted / sum(self.weight(s) for s in best_per_source)
            fused = Region(
                kind=members[0].kind,
                x0=cluster["box"][0],
                y0=cluster["box"][1],
                x1=cluster["box"][2],
                y1=cluster["box"][3],
                label=cluster["label"],
                score=min(score, 1.0),
                source="fused",
                sources=sorted(best_per_source),
            )
            if fused.score < self.min_score:
                fused.drop("low_score")
            cluster["fused"] = fused
            sample.regions.append(fused)
            self.counts["fused"] += 1
            for m in cluster["members"]:
                decisions[m] = (False, "fused_into")
        self.suppress_overlaps([c["fused"] for c in clusters if c["fused"].kept])
        return decisions

    def suppress_overlaps(self, fused: list[Region]) -> None:
        """NMS among fused boxes of one label: the better one stays, the others ``nms``."""
        if len(fused) < 2:
            return
        import torch

        from engine.boxes import batched_nms

        labels = sorted({region.label for region in fused})
        kept = set(
            batched_nms(
                torch.tensor([region.box for region in fused], dtype=torch.float64),
                torch.tensor([region.score for region in fused], dtype=torch.float64),
                torch.tensor([labels.index(region.label) for region in fused]),
                self.iou_threshold,
            ).tolist()
        )
        for index, region in enumerate(fused):
            if index not in kept:
                region.drop("nms")
                self.counts["fused_nms"] += 1

    def fused_box(self, members: list[Region]) -> tuple[float, float, float, float]:
        weights = [self.weight(m.source) * max(m.score, 1e-6) for m in members]
        total = sum(weights)
        return tuple(
            sum(w * m.box[k] for w, m in zip(weights, members, strict=True)) / total
            for k in range(4)
        )
