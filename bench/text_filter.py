"""Throughput of the spaCy text-complexity filter against plain ``nlp.pipe``.

    .venv/bin/python bench/text_filter.py           # 2,000 captions
    .venv/bin/python bench/text_filter.py --quick   # 400 captions

Both sides use the same loaded pipeline (``spacy.load(model, exclude=["ner",
"lemmatizer"])``, the one ``TextComplexityFilter.setup`` loads) and the same batch size:

- filter: ``TextComplexityFilter().run(samples)`` over all captions at once
  (parse, measure, store the seven fields, decide, count), samples built before the clock;
- baseline: ``for doc in nlp.pipe(texts, batch_size=...): pass``, the parse alone.

Captions are generated deterministically from templates (8 to 60 words, one to several
clauses, with adjectives, numbers, compound nouns, prepositional phrases and verbs). Each
side runs 3 times, alternating, and the best time counts. Headline: filter words/s /
nlp.pipe words/s, target >= 0.8. Result: ``bench/results/text_filter.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as bench/run.py: one engine worker's budget

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for _path in (str(REPO), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402

from engine.records import Sample, Text  # noqa: E402
from filters.text_complexity import TextComplexityFilter  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
TARGET = 0.8
REPEATS = 3
BATCH_SIZE = 256
SEED = 0

NUMBERS = ["two", "three", "four", "several", "many", "a few"]
ADJECTIVES = [
    "red", "blue", "green", "white", "black", "small", "large", "old", "young", "wooden",
    "shiny", "tall", "narrow", "busy", "quiet", "rusty", "colorful", "striped", "wet", "bright",
]  # fmt: skip
PEOPLE = [
    "man",
    "woman",
    "boy",
    "girl",
    "child",
    "player",
    "chef",
    "tourist",
    "worker",
    "police officer",
]
ANIMALS = ["dog", "cat", "horse", "bird", "cow", "sheep", "duck"]
THINGS = [
    "table", "bench", "bicycle", "car", "bus", "umbrella", "book", "bottle", "chair", "kite",
    "surfboard", "laptop", "cup", "sign", "building", "tree", "fence", "window", "door", "truck",
]  # fmt: skip
COMPOUNDS = [
    "bus stop",
    "brick wall",
    "street light",
    "coffee shop",
    "train station",
    "tennis court",
]
PLACES = [
    "street",
    "park",
    "beach",
    "kitchen",
    "field",
    "room",
    "market",
    "river",
    "road",
    "sidewalk",
]
PREPOSITIONS = ["on", "near", "next to", "behind", "in front of", "under", "beside", "across"]
CLOTHES = ["shirt", "jacket", "hat", "dress", "helmet", "coat"]
VERBS_TRANSITIVE = [
    "holding",
    "riding",
    "carrying",
    "reading",
    "watching",
    "pushing",
    "throwing",
    "eating",
]
VERBS_INTRANSITIVE = ["sitting", "standing", "walking", "running", "sleeping", "waiting", "smiling"]
VERBS_PRESENT = ["sits", "stands", "walks", "waits", "looks", "rests", "plays"]
CONNECTORS = [", while", " and", ", and", ". Behind them,", ". In the background,", ". Nearby,"]


def pluralize(noun: str) -> str:
    if noun == "sheep":
        return noun
    if noun.endswith(("ch", "sh", "s", "x")):
        return noun + "es"
    return noun + "s"


class Captions:
    """A deterministic caption generator (``random.Random(seed)``)."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = random.Random(seed)

    def pick(self, words: list[str]) -> str:
        return self.rng.choice(words)

    def adjectives(self, most: int = 2) -> str:
        chosen = self.rng.sample(ADJECTIVES, self.rng.randint(0, most))
        return " ".join(chosen) + (" " if chosen else "")

    def noun_phrase(self, nouns: list[str], plural_ok: bool = True) -> tuple[str, bool]:
        """A noun phrase and whether it is plural."""
        noun = self.pick(nouns)
        if plural_ok and " " not in noun and self.rng.random() < 0.25:
            plural = pluralize(noun)
            return f"{self.pick(NUMBERS)} {self.adjectives(1)}{plural}", True
        words = f"{self.adjectives()}{noun}"
        return f"{'an' if words[0] in 'aeiou' else 'a'} {words}", False

    def place(self) -> str:
        roll = self.rng.random()
        if roll < 0.3:
            words = f"{self.adjectives(1)}{self.pick(COMPOUNDS)}"
            return f"{self.pick(PREPOSITIONS)} {'an' if words[0] in 'aeiou' else 'a'} {words}"
        if roll < 0.6:
            return f"in the {self.adjectives(1)}{self.pick(PLACES)}"
        return f"{self.pick(PREPOSITIONS)} {self.noun_phrase(THINGS, plural_ok=False)[0]}"

    def subject(self) -> tuple[str, bool]:
        if self.rng.random() < 0.3:
            return self.noun_phrase(ANIMALS)
        subject, plural = self.noun_phrase(PEOPLE, plural_ok=False)
        if self.rng.random() < 0.4:
            words = f"{self.adjectives(1)}{self.pick(CLOTHES)}"
            subject += f" in {'an' if words[0] in 'aeiou' else 'a'} {words}"
        return subject, plural

    def clause(self) -> str:
        subject, plural = self.subject()
        be = "are" if plural else "is"
        roll = self.rng.random()
        if roll < 0.4:
            verb = f"{be} {self.pick(VERBS_TRANSITIVE)} {self.noun_phrase(THINGS)[0]}"
        elif roll < 0.7:
            verb = f"{be} {self.pick(VERBS_INTRANSITIVE)}"
        elif roll < 0.9:
            verb = self.pick(VERBS_PRESENT)
            verb = verb[:-1] if plural else verb
        else:
            return f"{subject} {self.place()}"  # no verb
        if self.rng.random() < 0.8:
            verb += f" {self.place()}"
        return f"{subject} {verb}"

    def caption(self, min_words: int = 8, max_words: int = 60) -> str:
        while True:
            target = self.rng.randint(min_words, max_words)
            text = self.clause()
            while len(text.split()) < target:
                text += f"{self.pick(CONNECTORS)} {self.clause()}"
            text = text[0].upper() + text[1:] + "."
            text = ". ".join(part[0].upper() + part[1:] for part in text.split(". "))
            if min_words <= len(text.split()) <= max_words:
                return text


def make_captions(n: int, seed: int = SEED) -> list[str]:
    generator = Captions(seed)
    return [generator.caption() for _ in range(n)]


def granularity_of(text: str) -> str:
    words = len(text.split())
    return "brief" if words < 16 else "detailed" if words < 36 else "more_detailed"


def make_samples(texts: list[str], per_sample: int = 3) -> list[Sample]:
    pixels = np.zeros((32, 32, 3), np.uint8)
    samples = []
    for start in range(0, len(texts), per_sample):
        chunk = texts[start : start + per_sample]
        samples.append(
            Sample(
                image_id=f"{start:032x}",
                uri=f"mem://{start}",
                pixels=pixels,
                format="png",
                n_bytes=0,
                texts=[
                    Text(granularity=granularity_of(t), text=t, source="bench@1") for t in chunk
                ],
            )
        )
    return samples


def time_filter(text_filter: TextComplexityFilter, texts: list[str]) -> float:
    samples = make_samples(texts)
    start = time.perf_counter()
    text_filter.run(samples)
    elapsed = time.perf_counter() - start
    measured = sum(1 for s in samples for t in s.texts if t.n_objects is not None)
    if measured != len(texts):
        raise RuntimeError(f"the filter measured {measured} of {len(texts)} texts")
    return elapsed


def time_pipe(nlp, texts: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    for _doc in nlp.pipe(texts, batch_size=batch_size):
        pass
    return time.perf_counter() - start


def describe_machine() -> dict | None:
    try:
        import machine

        return machine.describe_machine()
    except Exception as exc:  # noqa: BLE001 - a description is optional
        return {"error": f"{type(exc).__name__}: {exc}"}


def run(quick: bool = False) -> dict:
    began = time.perf_counter()
    n_texts = 400 if quick else 2000
    texts = make_captions(n_texts)
    n_words = sum(len(t.split()) for t in texts)

    text_filter = TextComplexityFilter(batch_size=BATCH_SIZE)
    text_filter.setup()
    nlp = text_filter._nlp  # the very pipeline the filter parses with
    for component in ("ner", "lemmatizer"):
        if component in nlp.pipe_names:
            raise RuntimeError(f"pipeline still has {component!r}: {nlp.pipe_names}")
    # Warm-up, untimed.
    time_pipe(nlp, texts[:64], BATCH_SIZE)
    text_filter.run(make_samples(texts[:64]))

    runs: dict[str, list[float]] = {"filter": [], "nlp_pipe": []}
    for repeat in range(REPEATS):
        order = ("filter", "nlp_pipe") if repeat % 2 == 0 else ("nlp_pipe", "filter")
        for side in order:
            if side == "filter":
                runs[side].append(time_filter(text_filter, texts))
            else:
                runs[side].append(time_pipe(nlp, texts, BATCH_SIZE))
    best = {side: min(seconds) for side, seconds in runs.items()}
    words_per_s = {side: n_words / seconds for side, seconds in best.items()}
    ratio = words_per_s["filter"] / words_per_s["nlp_pipe"]
    met = ratio >= TARGET

    result = {
        "benchmark": "text_filter",
        "bench_seconds": round(time.perf_counter() - began, 1),
        "headlines": [
            {
                "measure": "text_complexity filter words/s / nlp.pipe words/s",
                "ratio": round(ratio, 4),
                "target": f">= {TARGET:.2f}",
                "met": met,
            }
        ],
        "notes": [
            f"text_filter: {n_texts} generated captions ({n_words} words, 8-60 words each), "
            f"one run / one nlp.pipe pass over all of them, batch_size {BATCH_SIZE}, "
            f"same pipeline ({text_filter.model}, components {nlp.pipe_names}), best of "
            f"{REPEATS} alternating runs per side, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}.",
        ],
        "measurements": {
            "quick": quick,
            "model": text_filter.model,
            "pipe_names": list(nlp.pipe_names),
            "n_texts": n_texts,
            "n_words": n_words,
            "batch_size": BATCH_SIZE,
            "runs_s": runs,
            "best_s": best,
            "words_per_s": words_per_s,
            "filter_counts": dict(text_filter.counts),
        },
        "machine": describe_machine(),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "text_filter.json").write_text(
        json.dumps(result, indent=2, sort_keys=True) + "\n"
    )

    print(f"texts: {n_texts}, words: {n_words}, batch_size: {BATCH_SIZE}")
    print(f"filter words/s:   {words_per_s['filter']:,.0f}")
    print(f"nlp.pipe words/s: {words_per_s['nlp_pipe']:,.0f}")
    print(f"ratio: {ratio:.3f}  (target >= {TARGET}: {'met' if met else 'MISSED'})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 captions instead of 2,000")
    args = parser.parse_args(argv)
    run(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
