"""Sentence embeddings of a sentence-transformers folder made of a BERT, mean pooling and
(optionally) L2 normalisation (all-MiniLM-L6-v2, the grounder's default), computed with
torch and ``tokenizers`` alone.

Why not ``sentence_transformers.SentenceTransformer``: importing it imports
``transformers`` and its dependencies, 5.9 s of every worker's start on this machine
(``python -X importtime``: torch 2.4 s, sentence-transformers 8.3 s), for a network of a
dozen matrix products (issue 27). The folder's own files say what to compute:

- ``modules.json``: the modules in order; supported here: ``Transformer`` (a ``BertModel``,
  ``config.json``), ``Pooling`` with ``pooling_mode_mean_tokens`` only, ``Normalize``;
- ``sentence_bert_config.json``: ``max_seq_length`` (longer texts are cut, as
  sentence-transformers cuts them) and ``do_lower_case`` (the tokenizer lower-cases on its
  own when its ``tokenizer.json`` says so);
- ``model.safetensors``: the BERT's weights (no pickle);
- ``tokenizer.json``: the fast tokenizer (WordPiece with its normaliser and [CLS]/[SEP]
  template).

``load_sentence_encoder(folder)`` returns a ``BertSentenceEncoder`` for such a folder and a
``SentenceTransformer`` otherwise (imported only then); both have ``encode(texts)`` ->
``float32 [N, D]``. The test ``tests/unit/test_sentence_encoder.py`` checks the two agree
(cosine within 1e-5) on the packaged model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"


def light_layout(folder: Path) -> dict | None:
    """The settings of ``folder`` when this module can run it (see the module docstring),
    else None."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    kinds = [module.get("type") for module in modules]
    if kinds not in ([TRANSFORMER, POOLING], [TRANSFORMER, POOLING, NORMALIZE]):
        return None
    if modules[0].get("path", "") != "" or config.get("model_type") != "bert":
        return None
    if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":  # fmt: skip
        return None
    pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
    modes = {key for key, value in pooling.items() if key.startswith("pooling_mode") and value}
    if modes != {"pooling_mode_mean_tokens"}:
        return None
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
        return None
    settings_path = folder / "sentence_bert_config.json"
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    return {
        "config": config,
        "normalize": kinds[-1] == NORMALIZE,
        "max_seq_length": int(
            settings.get("max_seq_length") or config["max_position_embeddings"]
        ),  # fmt: skip
    }


def load_sentence_encoder(model: str | Path, threads: int = 0):
    """An encoder of the sentence-transformers folder ``model``: ``BertSentenceEncoder`` when
    its layout allows (``light_layout``), else ``sentence_transformers.SentenceTransformer``
    on the CPU."""
    folder = Path(model)
    layout = light_layout(folder)
    if layout is None:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(folder), device="cpu")
    return BertSentenceEncoder(folder, layout)


class BertSentenceEncoder:
    """``encode(texts, batch_size=64)``: the sentence embeddings (``float32 [N, hidden]``,
    unit length when the folder normalises), mean of the last layer's token vectors over
    the attention mask, as sentence-transformers computes them."""

    def __init__(self, folder: Path, layout: dict):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self.normalize = layout["normalize"]
        config = layout["config"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(min(layout["max_seq_length"], config["max_position_embeddings"]))  # fmt: skip
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))
        self.network = Bert(config)
        state = load_file(str(folder / "model.safetensors"))
        # The checkpoint may name its tensors with or without the ``bert.`` prefix, and
        # carries a pooler (unused by mean pooling) and the position ids buffer.
        state = {key.removeprefix("bert."): value for key, value in state.items()}
        wanted = self.network.state_dict()
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise ValueError(f"{folder / 'model.safetensors'}: no tensor {missing[0]}: not a BERT checkpoint")  # fmt: skip
        self.network.load_state_dict({key: state[key] for key in wanted})
        self.network.eval()
        self._torch = torch

    def encode(self, texts: list[str], batch_size: int = 64, **_ignored) -> np.ndarray:
        """``_ignored``: sentence-transformers' ``encode`` options the grounder passes
        (``normalize_embeddings``, ``show_progress_bar``): normalisation follows the folder."""
        torch = self._torch
        out = []
        for start in range(0, len(texts), batch_size):
            encodings = self.tokenizer.encode_batch(list(texts[start : start + batch_size]))
            ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
            types = torch.tensor([e.type_ids for e in encodings], dtype=torch.long)
            mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.float32)
            with torch.inference_mode():
                tokens = self.network(ids, types, mask)
                summed = (tokens * mask.unsqueeze(-1)).sum(dim=1)
                vectors = summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
                if self.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            out.append(vectors.numpy().astype(np.float32))
        if not out:
            return np.zeros((0, self.network.hidden_size), np.float32)
        return np.concatenate(out)


def Bert(config: dict):  # noqa: N802 (a class factory: torch is imported when it is called)
    """BERT's encoder as ``transformers.BertModel`` computes it in eval mode (post-norm
    layers, exact-erf GELU, absolute positions), with the same parameter names, so its
    checkpoint loads as is. ``forward(ids, token_types, mask)`` -> the last layer's token
    vectors ``[N, T, hidden]``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config.get("layer_norm_eps", 1e-12)

    class Dense(nn.Module):  # ``dense`` then, for the output blocks, residual + LayerNorm
        def __init__(self, size_in: int, size_out: int, norm: bool):
            super().__init__()
            self.dense = nn.Linear(size_in, size_out)
            if norm:
                self.LayerNorm = nn.LayerNorm(size_out, eps=eps)  # noqa: N815 (BERT's name)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = SelfAttention()
            self.output = Dense(hidden, hidden, norm=True)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention()
            self.intermediate = Dense(hidden, config["intermediate_size"], norm=False)
            self.output = Dense(config["intermediate_size"], hidden, norm=True)

        def forward(self, x, bias):
            n, t, _ = x.shape
            attention = self.attention.self

            def split(projection):
                return projection(x).view(n, t, heads, hidden // heads).transpose(1, 2)

            q, k, v = split(attention.query), split(attention.key), split(attention.value)
            scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // heads) + bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, hidden)
            out = self.attention.output
            x = out.LayerNorm(out.dense(context) + x)
            inner = F.gelu(self.intermediate.dense(x))
            return self.output.LayerNorm(self.output.dense(inner) + x)

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
            self.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden)
            self.token_type_embeddings = nn.Embedding(config["type_vocab_size"], hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)  # noqa: N815 (BERT's name)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))

    class BertNetwork(nn.Module):
        hidden_size = hidden

        def __init__(self):
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()

        def forward(self, ids, token_types, mask):
            positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
            e = self.embeddings
            x = e.word_embeddings(ids) + e.token_type_embeddings(token_types) + e.position_embeddings(positions)  # fmt: skip
            x = e.LayerNorm(x)
            # Padding is never attended to: the most negative float on masked keys.
            bias = (1.0 - mask)[:, None, None, :] * torch.finfo(x.dtype).min
            for layer in self.encoder.layer:
                x = layer(x, bias)
            return x

    return BertNetwork()
