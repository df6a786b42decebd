"""Image captioner: any transformers image-to-text model, from a hub id or a local folder
(a ``save_pretrained`` folder or a downloaded snapshot).

Output: ``Text`` rows appended to ``sample.texts``, one per image and granularity:

- Florence-2 (detected from ``config.model_type == "florence2"``): each granularity is
  its own task prompt, ``brief`` -> ``<CAPTION>``, ``detailed`` -> ``<DETAILED_CAPTION>``,
  ``more_detailed`` -> ``<MORE_DETAILED_CAPTION>`` (the processor turns a task token into
  its instruction, e.g. "Describe in detail what is shown in the image.").
- Any other model (BLIP, GIT, VisionEncoderDecoder, ...): ``brief`` is the model's
  unprompted caption; ``detailed`` and ``more_detailed`` are written only where
  ``prompts`` gives a text prompt for them (BLIP continues a prefix such as "a detailed
  picture of"); the prompt is passed as ``processor(images=..., text=prompt)``. A prompt
  for ``brief`` replaces the unprompted caption.

``text`` is the generated continuation only (special tokens and the echoed prompt
removed, whitespace stripped); an image whose generation is empty gets no row for that
granularity. ``score`` is the geometric mean of the generated tokens' probabilities,
``exp(mean log p(token))`` from ``compute_transition_scores`` (the probabilities after
the generation config's logits processors, renormalised), counted up to and including
the end-of-sequence token; in [0, 1], higher is more confident, comparable only between
texts of the same model. ``source`` is ``hf_captioner@1`` (or ``<source_name>@1``).

Each granularity is one batched ``generate`` call over the whole batch, greedy or beam
search (never sampling: the same image gives the same text). Florence-2 encodes each image
once for all granularities (``annotators.florence2_model``); ``dtype`` ``float16`` or
``bfloat16`` halves weights and activations on a GPU.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator, hub_id_or_folder
from annotators.florence2_model import MODEL_TYPE as FLORENCE2_MODEL_TYPE
from annotators.florence2_model import Florence2, ModelSource
from annotators.hf_generation import Decoding, decode_text, generate_scored
from engine.records import GRANULARITIES, Sample, Text
from engine.steps import WorkerContext, resolve_device

log = logging.getLogger(__name__)

FLORENCE2_TASKS = {
    "brief": "<CAPTION>",
    "detailed": "<DETAILED_CAPTION>",
    "more_detailed": "<MORE_DETAILED_CAPTION>",
}


@dataclass(config=STRICT)
class HFCaptioner(SampleAnnotator):
    """A transformers image-to-text captioner (Florence-2, BLIP, GIT, ...).

    Args:
        model: a hub id (``florence-community/Florence-2-base``,
            ``Salesforce/blip-image-captioning-base``), fetched from the local hub cache
            (set ``HF_HUB_OFFLINE=1`` where there is no hub), or a local folder holding
            the model and its processor. A path (starting with ``/``, ``.`` or ``~``, or
            existing) must be an existing folder when the config is read. Models load
            with transformers' own classes (no ``trust_remote_code``): for Florence-2 use
            the native ``florence-community/Florence-2-*`` conversions.
        revision: hub revision (branch, tag or commit) to pin a hub id to.
        granularities: which of ``brief``, ``detailed``, ``more_detailed`` to produce.
            Non-Florence models produce ``detailed``/``more_detailed`` only with a prompt.
        prompts: a text prompt per granularity. For Florence-2, a task token replacing the
            default one; for other models a prefix the caption continues. Default: the
            Florence-2 task tokens, and no prompt (``brief`` only) for other models.
        max_new_tokens: longest generated text, in tokens.
        num_beams: 1 for greedy decoding, more for beam search.
        generate_kwargs: any further ``generate`` arguments (``repetition_penalty``,
            ``no_repeat_ngram_size``, ``length_penalty``...). Sampling is not allowed.
        device: ``auto`` (default: the GPU Ray assigned this worker, else CPU; in-process,
            CUDA if torch sees it), or ``cpu``, ``cuda:0``...
        dtype: weights and activations dtype (``float16``/``bfloat16`` for GPUs).
        source_name: overrides ``name`` in ``source``.
    """

    name: ClassVar[str] = "hf_captioner"
    version: ClassVar[str] = "1"

    model: str
    revision: str | None = None
    granularities: list[str] = Field(default_factory=lambda: list(GRANULARITIES), min_length=1)
    prompts: dict[str, str] | None = None
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 64
    num_beams: Annotated[int, Field(ge=1, le=64)] = 1
    generate_kwargs: dict[str, Any] = Field(default_factory=dict)
    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    source_name: str | None = None

    @field_validator("model")
    @classmethod
    def _model_found(cls, model: str) -> str:
        return hub_id_or_folder(model)

    @field_validator("granularities")
    @classmethod
    def _known_granularities(cls, granularities: list[str]) -> list[str]:
        unknown = [g for g in granularities if g not in GRANULARITIES]
        if unknown:
            raise ValueError(f"unknown granularities {unknown}; known: {list(GRANULARITIES)}")
        if len(set(granularities)) != len(granularities):
            raise ValueError(f"granularities repeat: {granularities}")
        return granularities

    @field_validator("prompts")
    @classmethod
    def _known_prompts(cls, prompts: dict[str, str] | None) -> dict[str, str] | None:
        if prompts is not None:
            unknown = [g for g in prompts if g not in GRANULARITIES]
            if unknown:
                raise ValueError(f"prompts for unknown granularities {unknown}")
        return prompts

    @field_validator("generate_kwargs")
    @classmethod
    def _deterministic(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        reserved = {"max_new_tokens", "num_beams", "output_scores", "return_dict_in_generate"}
        if kwargs.get("do_sample"):
            raise ValueError("sampling (do_sample) is not allowed: captions must be repeatable")
        clash = sorted(reserved & set(kwargs))
        if clash:
            raise ValueError(f"set {clash} through this annotator's own fields")
        return kwargs

    # ------------------------------------------------------------------ model

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        self._device = resolve_device(self.device, worker)
        from engine.offline import apply_offline_env

        apply_offline_env()
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        options = {"revision": self.revision} if self.revision else {}
        config = AutoConfig.from_pretrained(self.model, **options)
        self._is_florence2 = config.model_type == FLORENCE2_MODEL_TYPE
        self._decoding = Decoding(self.max_new_tokens, self.num_beams, dict(self.generate_kwargs))
        if self._is_florence2:
            self._florence2 = Florence2(
                ModelSource(self.model, self.revision, self._device, self.dtype)
            )
            self._processor, self._model = self._florence2.processor, self._florence2.model
        else:
            self._torch_dtype = getattr(torch, self.dtype)
            self._processor = AutoProcessor.from_pretrained(self.model, **options)
            self._model = AutoModelForImageTextToText.from_pretrained(
                self.model, dtype=self._torch_dtype, **options
            )
            self._model.to(self._device).eval()
        self._tasks = self.tasks()

    def models(self) -> list:
        return [self._model]

    def tasks(self) -> dict[str, str | None]:
        """The prompt each produced granularity is generated with (``None``: unprompted)."""
        prompts = dict(self.prompts or {})
        if self._is_florence2:
            return {g: prompts.get(g, FLORENCE2_TASKS[g]) for g in self.granularities}
        tasks: dict[str, str | None] = {}
        for granularity in self.granularities:
            if granularity in prompts:
                tasks[granularity] = prompts[granularity]
            elif granularity == "brief":
                tasks[granularity] = None
            else:
                log.info(
                    "%s: no prompt for %r with a %s model: not produced",
                    self.source, granularity, type(self._model).__name__,
                )  # fmt: skip
        return tasks

    # ------------------------------------------------------------------ annotate

    def annotate_samples(self, samples: list[Sample]) -> None:
        if not samples:
            return
        from PIL import Image

        images = [Image.fromarray(sample.pixels).convert("RGB") for sample in samples]
        # Florence-2: the vision tower runs once for every granularity (florence2_model).
        features = self._florence2.encode(images) if self._is_florence2 else None
        for granularity, prompt in self._tasks.items():
            if features is not None:
                outputs = self._florence2.generate(features, [prompt] * len(images), self._decoding)
            else:
                outputs = generate_scored(
                    self._model, self._processor, self.inputs(images, prompt), self._decoding
                )
            for sample, output in zip(samples, outputs, strict=True):
                text = decode_text(self._processor, output)
                if text:
                    sample.texts.append(
                        Text(
                            granularity=granularity,
                            text=text,
                            source=self.source,
                            score=output.score,
                        )
                    )

    def inputs(self, images: list, prompt: str | None):
        """The processor's tensors for one batched ``generate`` call, on the device."""
        if prompt is None:
            batch = self._processor(images=images, return_tensors="pt")
        else:
            batch = self._processor(
                images=images, text=[prompt] * len(images), padding=True, return_tensors="pt"
            )
        batch = batch.to(self._device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self._torch_dtype)
        return batch

    def caption(self, images: list, prompt: str | None) -> list[tuple[str, float]]:
        """``(text, score)`` per image (an empty text where nothing was generated), each
        image encoded for this prompt alone."""
        if self._is_florence2:
            outputs = self._florence2.generate(
                self._florence2.encode(images), [prompt] * len(images), self._decoding
            )
        else:
            outputs = generate_scored(
                self._model, self._processor, self.inputs(images, prompt), self._decoding
            )
        results = []
        for output in outputs:
            text = decode_text(self._processor, output)
            results.append((text, output.score) if text else ("", 0.0))
        return results
