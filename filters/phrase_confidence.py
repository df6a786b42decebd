"""Confidence thresholds on grounded phrases: a box whose grounding score is under
``min_box_score`` is dropped (``low_score``); a phrase whose best box is under
``min_phrase_score`` loses all its boxes (``low_phrase_score``). Phrase rows without a
box are left as the grounder marked them."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field
from pydantic.dataclasses import dataclass

from engine.records import Phrase, Sample
from engine.steps import STRICT
from filters.base import Decision, PhraseFilter

Threshold = Annotated[float, Field(ge=0.0, le=1.0)]


@dataclass(config=STRICT)
class PhraseConfidenceFilter(PhraseFilter):
    """Args:
    min_box_score: threshold for each (phrase, box) row.
    min_phrase_score: threshold for a phrase's best box.
    """

    name: ClassVar[str] = "phrase_confidence"

    min_box_score: Threshold = 0.5
    min_phrase_score: Threshold = 0.55

    def decide(self, sample: Sample, items: list[Phrase]) -> list[Decision]:
        best: dict[int, float] = {}
        for phrase in items:
            if phrase.box is not None:
                best[phrase.group] = max(best.get(phrase.group, 0.0), phrase.score)
        decisions: list[Decision] = []
        for phrase in items:
            if phrase.box is None:
                decisions.append(True)
            elif best[phrase.group] < self.min_phrase_score:
                decisions.append((False, "low_phrase_score"))
            elif phrase.score < self.min_box_score:
                decisions.append((False, "low_score"))
            else:
                decisions.append(True)
        return decisions
