"""Scored generation for transformers image-to-text models, shared by the captioner, the
Florence-2 specialist and the grounder's Florence-2 backend (not an annotator itself).

``generate_scored(model, processor, inputs, decoding)`` runs one batched ``generate``
(greedy or beam search, never sampling) and returns one ``Generated`` per input row:

- ``tokens``: the generated token ids (after the decoder start or the echoed prompt),
  up to and including the first end-of-sequence token, without padding;
- ``log_probs``: the log-probability of each of those tokens from
  ``compute_transition_scores`` (after the generation config's logits processors,
  renormalised), aligned with ``tokens``;
- ``score``: ``exp(mean log p)``, the geometric mean of the token probabilities, in [0, 1]
  (0 for an empty generation); comparable only between outputs of one model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Decoding:
    """How to generate: ``max_new_tokens``, ``num_beams`` (1: greedy) and any further
    ``generate`` arguments (``repetition_penalty``...; sampling is refused by the
    annotators' config validation)."""

    max_new_tokens: int = 64
    num_beams: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generated:
    tokens: list[int]
    log_probs: list[float]

    @property
    def score(self) -> float:
        if not self.tokens:
            return 0.0
        mean = sum(self.log_probs) / len(self.log_probs)
        return min(max(math.exp(mean), 0.0), 1.0) if math.isfinite(mean) else 0.0


def generate_scored(model, processor, inputs: dict, decoding: Decoding) -> list[Generated]:
    """One batched ``generate`` call over ``inputs`` (tensors already on the model's
    device: ``input_ids``/``pixel_values`` or ``inputs_embeds`` and ``attention_mask``)."""
    import torch

    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=decoding.max_new_tokens,
            num_beams=decoding.num_beams,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            **decoding.extra,
        )
        beam_indices = getattr(output, "beam_indices", None) if decoding.num_beams > 1 else None
        log_probs = model.compute_transition_scores(
            output.sequences, output.scores, beam_indices=beam_indices, normalize_logits=True
        )
    # The last columns of ``sequences`` are the generated tokens (those before are the
    # decoder start or the echoed prompt), aligned with the transition scores.
    tokens = output.sequences[:, -log_probs.shape[1] :]
    counted = counted_tokens(model, processor, tokens, beam_indices)
    results = []
    for row_tokens, row_log_probs, row_counted in zip(tokens, log_probs, counted, strict=True):
        keep = row_counted.cpu()
        results.append(
            Generated(
                tokens=row_tokens.cpu()[keep].tolist(),
                log_probs=row_log_probs.float().cpu()[keep].tolist(),
            )
        )
    return results


def counted_tokens(model, processor, tokens, beam_indices=None):
    """Mask of the generated tokens that belong to the output: every token up to and
    including the first end-of-sequence one, and no padding after it."""
    import torch

    ends = end_token_ids(model, processor)
    pad = model.generation_config.pad_token_id
    is_end = torch.isin(tokens, torch.tensor(sorted(ends), device=tokens.device))
    ended_before = (is_end.long().cumsum(dim=1) - is_end.long()) > 0
    counted = ~ended_before
    if pad is not None and pad not in ends:
        counted &= tokens != pad
    if beam_indices is not None:
        counted &= beam_indices[:, : tokens.shape[1]] >= 0
    return counted


def end_token_ids(model, processor) -> set[int]:
    ends: set[int] = set()
    eos = model.generation_config.eos_token_id
    ends.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    tokenizer = getattr(processor, "tokenizer", processor)
    for name in ("eos_token_id", "sep_token_id"):  # BLIP ends its captions at [SEP]
        if getattr(tokenizer, name, None) is not None:
            ends.add(getattr(tokenizer, name))
    return ends


def decode_text(processor, generated: Generated) -> str:
    """The generated text, special tokens removed, whitespace stripped."""
    return processor.batch_decode([generated.tokens], skip_special_tokens=True)[0].strip()
