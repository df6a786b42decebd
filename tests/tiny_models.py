"""Tiny random-weight models for the segmentation and grounding backends, built offline
and saved where the annotators load them exactly as they load real weights.

- ``build_tiny_sam(path)``: a segment-anything ``state_dict`` that
  ``SamSegmenter(model_type="custom", encoder=TINY_SAM_ENCODER)`` loads through
  ``segment_anything.build_sam._build_sam`` + strict ``load_state_dict``, the path an
  official ``sam_vit_b_01ec64.pth`` takes. The image encoder is one ViT block of width
  32; the prompt encoder and mask decoder are SAM's own fixed-size ones (``_build_sam``
  hard-codes their 256-wide embeddings and the 1024-pixel input), so the file is about
  19 MB and ``set_image`` plus a batched ``predict_torch`` take about a second on one
  CPU core.
- ``build_tiny_owl(folder, kind)``: ``Owlv2ForObjectDetection`` (``kind="owlv2"``) or
  ``OwlViTForObjectDetection`` (``"owlvit"``) with its processor (``Owlv2Processor`` /
  ``OwlViTProcessor`` = the model's image processor at 256x256 + a ``CLIPTokenizer`` whose
  byte-level BPE with ``</w>`` word ends is trained here on a few phrases), saved with
  ``save_pretrained`` so that ``from_pretrained(folder)`` loads it like a hub snapshot.
  A 256x256 input with 32-pixel patches gives 64 predicted boxes (not smaller: OWLv2's
  processor blurs a photo before downscaling it, with a Gaussian that widens with the
  downscale factor, and at 64x64 that blur took seconds per photo). The box head's last
  layer is scaled down (x0.002) so that boxes stay near OWL's patch-grid prior (unit-scale random
  weights saturate the box sigmoid into zero-size boxes at the image corners).

Outputs are meaningless but real: same loading code, processors and post-processing.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

TINY_SAM_ENCODER = {"embed_dim": 32, "depth": 1, "num_heads": 2, "global_attn_indexes": [0]}

OWL_IMAGE_SIZE = 256

PHRASES = [
    "a bus", "the red bus", "two people", "a man in a suit", "a person", "three persons",
    "people walking on the street", "a tie", "a cat on a table", "a cup of coffee",
    "a large blue city bus", "two men standing in front of a wall", "a building",
]  # fmt: skip


def build_tiny_sam(path: str | Path, seed: int = 0) -> Path:
    """Save the ``state_dict`` of a tiny random SAM to ``path``; returns the path."""
    import torch
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(seed)
    sam = _build_sam(
        encoder_embed_dim=TINY_SAM_ENCODER["embed_dim"],
        encoder_depth=TINY_SAM_ENCODER["depth"],
        encoder_num_heads=TINY_SAM_ENCODER["num_heads"],
        encoder_global_attn_indexes=TINY_SAM_ENCODER["global_attn_indexes"],
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), path)
    return path


def clip_tokenizer(max_length: int = 16):
    """A ``CLIPTokenizer`` over a BPE trained on ``PHRASES``: every byte symbol with and
    without ``</w>``, the learned merges, then ``<|startoftext|>`` and ``<|endoftext|>``
    last (OWL pools the text at the argmax of the ids, i.e. at the end token); ``!`` is
    the padding token with id 0, as in OWL's real vocabulary."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        end_of_word_suffix="</w>",
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(PHRASES, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    symbols = ["!"] + sorted(set(alphabet) - {"!"})
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    known = set(tokens)
    tokens += [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]) if t not in known]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!", model_max_length=max_length)


def build_tiny_owl(folder: str | Path, kind: str = "owlv2", seed: int = 0) -> Path:
    """Save a tiny random OWLv2 or OWL-ViT detector with its processor into ``folder``."""
    import torch
    import transformers

    prefix = {"owlv2": "Owlv2", "owlvit": "OwlViT"}[kind]
    config_class = getattr(transformers, f"{prefix}Config")
    model_class = getattr(transformers, f"{prefix}ForObjectDetection")
    processor_class = getattr(transformers, f"{prefix}Processor")
    image_processor_class = getattr(transformers, f"{prefix}ImageProcessor")

    folder = Path(folder)
    tokenizer = clip_tokenizer()
    size = {"height": OWL_IMAGE_SIZE, "width": OWL_IMAGE_SIZE}
    image_processor = (
        image_processor_class(size=size)
        if kind == "owlv2"
        else image_processor_class(size=size, crop_size=size, do_center_crop=False)
    )
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer)
    config = config_class(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": OWL_IMAGE_SIZE,
            "patch_size": 32,
        },
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        model.box_head.dense2.weight.mul_(0.002)
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder
