"""A native transformers Florence-2 (``Florence2ForConditionalGeneration`` and its
processor, no remote code) that encodes each image once and answers several task
prompts from the same features. Shared by ``hf_captioner`` (three caption granularities),
``florence2_regions`` (``<OD>``, ``<DENSE_REGION_CAPTION>``, ``<OCR_WITH_REGION>``) and
``hf_grounder``'s Florence-2 backend (``<CAPTION_TO_PHRASE_GROUNDING>``); not an
annotator itself.

Why the features can be reused: Florence-2's encoder input is the text embeddings with the
image tokens' placeholders replaced by the projected vision features
(``Florence2Model.forward``). ``encode`` computes those features once per image
(``get_image_features``); ``generate`` builds the encoder input of each prompt from them,
runs the text encoder on it and hands ``generate`` the ``encoder_outputs``: the same
input ``generate`` builds itself from ``pixel_values``. So the vision tower, the costly
part, runs once per image
however many tasks are asked (a test checks the outputs equal those of
``generate(pixel_values=...)``).

Coordinates: ``parse`` returns the processor's own ``post_process_generation`` output for a
task, in pixels of the image (Florence-2 quantises both axes into 1000 bins;
``dequantize`` gives the bin centres as integers).
"""

from __future__ import annotations

from dataclasses import dataclass

from annotators.hf_generation import Decoding, Generated, generate_scored

MODEL_TYPE = "florence2"


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from and how they run: ``model`` (hub id or local folder),
    ``revision``, ``device`` (already resolved), ``dtype`` (``float32``/``float16``/
    ``bfloat16``)."""

    model: str
    revision: str | None = None
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def options(self) -> dict:
        return {"revision": self.revision} if self.revision else {}


class Florence2:
    """Florence-2 loaded once (call from a step's ``setup``)."""

    def __init__(self, source: ModelSource) -> None:
        from engine.offline import apply_offline_env

        apply_offline_env()
        import torch
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        self.device = source.device
        self.dtype = getattr(torch, source.dtype)
        self.processor = AutoProcessor.from_pretrained(source.model, **source.options)
        self.model = Florence2ForConditionalGeneration.from_pretrained(
            source.model, dtype=self.dtype, **source.options
        )
        self.model.to(self.device).eval()
        tokenizer = self.processor.tokenizer
        self.location_ids = {
            token_id
            for token, token_id in tokenizer.get_vocab().items()
            if token.startswith("<loc_") and token.endswith(">")
        }

    def encode(self, images: list):
        """The projected vision features of PIL ``images``: ``(n, image_tokens, dim)``."""
        import torch

        pixels = self.processor.image_processor(images=images, return_tensors="pt")
        pixel_values = pixels["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            return self.model.get_image_features(pixel_values).pooler_output

    def prompt_text(self, prompt: str) -> str:
        """A task token (``<OD>``) or task token + input (``<CAPTION_TO_PHRASE_GROUNDING>a
        dog``) as the instruction the processor would write for it."""
        processor = self.processor
        for task, instruction in processor.task_prompts_without_inputs.items():
            if task in prompt:
                if prompt != task:
                    raise ValueError(f"task {task} takes no input: {prompt!r}")
                return instruction
        for task, instruction in processor.task_prompts_with_input.items():
            if task in prompt:
                return instruction.format(input=prompt.replace(task, "").strip())
        return prompt

    def generate(
        self, features, prompts: list[str], decoding: Decoding, rows: list[int] | None = None
    ) -> list[Generated]:
        """One batched ``generate``: prompt ``i`` asked of image ``rows[i]`` of
        ``features`` (default: row ``i``)."""
        import torch

        rows = list(range(len(prompts))) if rows is None else rows
        processor = self.processor
        tokenizer = processor.tokenizer
        texts = [
            processor.image_token * processor.num_image_tokens
            + tokenizer.bos_token
            + self.prompt_text(prompt)
            + tokenizer.eos_token
            for prompt in prompts
        ]
        positions = int(self.model.config.text_config.max_position_embeddings)
        batch = tokenizer(
            texts, add_special_tokens=False, padding=True, truncation=True,
            max_length=positions, return_tensors="pt",
        )  # fmt: skip
        input_ids = batch["input_ids"].to(self.device)
        with torch.inference_mode():
            embeds = self.model.get_input_embeddings()(input_ids)
            image_features = features[torch.as_tensor(rows, device=features.device)]
            mask = (input_ids == self.model.config.image_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(mask, image_features.to(embeds.dtype))
            attention_mask = batch["attention_mask"].to(self.device)
            # The encoder runs here and generate gets its output: in this transformers
            # version generate(inputs_embeds=...) drops the embeddings of an
            # encoder-decoder model before its encoder sees them.
            encoded = self.model.get_encoder()(
                inputs_embeds=embeds, attention_mask=attention_mask, return_dict=True
            )
        inputs = {"encoder_outputs": encoded, "attention_mask": attention_mask}
        return generate_scored(self.model, processor, inputs, decoding)

    def parse(self, generated: Generated, task: str, image_size: tuple[int, int]) -> dict:
        """``post_process_generation`` of one output for ``task``, ``image_size`` =
        ``(width, height)``: e.g. ``{"bboxes": [[x0, y0, x1, y1], ...], "labels": [...]}``
        for ``<OD>``, ``{"quad_boxes": [[x0, y0, ... x3, y3]], "labels": [...]}`` for
        ``<OCR_WITH_REGION>``."""
        if not generated.tokens:
            return {}
        return self.processor.post_process_generation(
            sequence=generated.tokens, task=task, image_size=image_size
        )[task]

    def location_scores(self, generated: Generated, per_instance: int) -> list[float]:
        """The score of each located instance in output order: the geometric mean of the
        probabilities of its ``per_instance`` location tokens (4 for a box, 8 for a quad).
        The parser reads a run of consecutive location tokens as ``len // per_instance``
        instances and ignores shorter runs; so does this, so instance ``i`` of ``parse``
        has score ``i`` when the counts agree (callers fall back to the whole output's
        score when they do not, e.g. when the parser skipped an instance with no words)."""
        import math

        runs: list[list[float]] = []
        previous_located = False
        for token, log_p in zip(generated.tokens, generated.log_probs, strict=True):
            located = token in self.location_ids
            if located and not previous_located:
                runs.append([])
            if located:
                runs[-1].append(log_p)
            previous_located = located
        scores = []
        for run in runs:
            for start in range(0, len(run) - per_instance + 1, per_instance):
                chunk = run[start : start + per_instance]
                scores.append(min(max(math.exp(sum(chunk) / per_instance), 0.0), 1.0))
        return scores
