"""Tiny random-weight transformers captioners, built offline and saved to a folder that
``from_pretrained(folder)`` loads exactly as it loads a hub snapshot.

- ``build_tiny_florence2(folder)``: ``Florence2ForConditionalGeneration`` (DaViT vision
  tower + BART), ``Florence2Processor`` = ``CLIPImageProcessor`` + a byte-level BPE
  ``BartTokenizer`` trained here on a few sentences, with Florence-2's ``<image>`` token.
- ``build_tiny_blip(folder)``: ``BlipForConditionalGeneration``, ``BlipProcessor`` =
  ``BlipImageProcessor`` + a WordPiece ``BertTokenizer`` over a written word list, with
  BLIP's ``[DEC]`` decoder-start token.

Both models are a few hundred kB, take 64x64 images and generate in milliseconds.

Random weights at the library's default initialisation (std 0.02) make a decoder that
ignores its input and emits end-of-sequence first, i.e. an empty caption. So the builders
re-draw the weights at unit scale (input-dependent outputs) and zero the output rows of
special and single-byte tokens, so that greedy decoding emits readable subwords for the
whole ``max_new_tokens`` instead of ending at once. Outputs stay meaningless, but real:
same processors, same ``generate``, same decoding as a hub model.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

IMAGE_SIZE = 64

# Text the tokenizers learn from: Florence-2's caption prompts (so that they tokenize into
# few pieces) and some caption words.
CORPUS = [
    "What does the image describe?",
    "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.",
    "a picture of a bus on a street with people walking",
    "a detailed description of a man in a suit and a tie",
    "a red bus parked next to a building, two men standing in front of a wall",
    "a cat sitting on a table near a cup of coffee",
]

WORDS = sorted(
    {word.strip(".,?").lower() for sentence in CORPUS for word in sentence.split()}
    | {"photo", "photograph", "long", "short"}
)


def _expressive(model, output_layer, speakable: list[int], seed: int) -> None:
    """Re-draw every linear layer at ``1/sqrt(fan_in)`` and every embedding at unit scale,
    and let only ``speakable`` token ids have output weights (the others get logit 0,
    far under the maximum of a few hundred unit-scale logits)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                std = module.in_features**-0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
            elif isinstance(module, torch.nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
        weight = output_layer.weight
        mask = torch.zeros(weight.shape[0], dtype=torch.bool)
        mask[speakable] = True
        weight.copy_(torch.randn(weight.shape, generator=generator))
        weight[~mask] = 0.0
        if getattr(output_layer, "bias", None) is not None:
            output_layer.bias.zero_()


def _byte_level_bpe(vocab_size: int = 600) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a BART-style byte-level BPE on ``CORPUS``; ids 0-3 are ``<s> <pad> </s> <unk>``
    as in BART, then ``<mask>``, the 256 byte symbols and the learned merges."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def _florence2_tokens(size: int, kernels, strides, paddings) -> int:
    """Image tokens a Florence-2 vision tower gives for a ``size`` square input: the
    final feature map's cells plus one pooled token."""
    for kernel, stride, padding in zip(kernels, strides, paddings, strict=True):
        size = (size + 2 * padding - kernel) // stride + 1
    return size * size + 1


def build_tiny_florence2(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random Florence-2 (model, processor, tokenizer) into ``folder``."""
    import torch
    from transformers import (
        BartTokenizer,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    folder = Path(folder)
    vocab, merges = _byte_level_bpe()
    n_base = len(vocab) - len(merges)  # specials + byte alphabet come first
    tokenizer = BartTokenizer(
        vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"}
    )
    kernels, strides, paddings = [7, 3], [4, 2], [3, 1]
    image_processor = CLIPImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        image_seq_length=_florence2_tokens(IMAGE_SIZE, kernels, strides, paddings),
    )
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    config = Florence2Config(
        text_config={
            "model_type": "bart",
            "vocab_size": len(tokenizer),
            "d_model": 32,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "max_position_embeddings": 256,
            "bos_token_id": 0,
            "pad_token_id": 1,
            "eos_token_id": 2,
            "decoder_start_token_id": 2,
        },
        vision_config={
            "depths": [1, 1],
            "patch_size": kernels,
            "patch_stride": strides,
            "patch_padding": paddings,
            "patch_prenorm": [False, True],
            "embed_dim": [16, 32],
            "num_heads": [1, 2],
            "num_groups": [1, 2],
            "window_size": 4,
            "projection_dim": 32,
            "max_position_embeddings": 16,
            "drop_path_rate": 0.0,
        },
        image_token_id=tokenizer.image_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    speakable = list(range(n_base, len(vocab)))  # the learned subwords
    _expressive(model, model.lm_head, speakable, seed)
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def build_tiny_blip(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random BLIP captioner (model, processor, tokenizer) into ``folder``."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = Path(folder)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: index for index, token in enumerate([*specials, *WORDS, "?", ".", ","])}
    # BLIP's decoder starts from [DEC] (its text config's bos_token_id), stops at [SEP].
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    image_processor = BlipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    hidden = 32
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "encoder_hidden_size": hidden,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": hidden,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": 16,
        },
        projection_dim=hidden,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    speakable = [vocab[word] for word in WORDS]
    _expressive(model, model.text_decoder.cls.predictions.decoder, speakable, seed)
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder
