"""SAM masks for boxes, from a segment-anything checkpoint (``checkpoint``) or a
transformers ``SamModel`` (``model``: a hub id such as ``facebook/sam-vit-base`` or a
local folder). Images go through the image encoder ``batch_size`` at a time (one forward
pass); then each image's boxes are one batched prompt-encoder + mask-decoder call (per
``max_boxes_per_call``). Masks stay on the model's device: only the part of each mask
inside its box is copied back and traced.

Output (the same as ``grabcut_segmenter``'s, so either can fill the masks stage):

- ``Phrase.polygon`` of every kept phrase row with a box and no polygon yet (a phrase
  grounded to an OCR line already has the line's quad);
- ``Region.polygon`` of kept ``object`` regions, when ``segment_regions`` is set
  (replacing any polygon they had, as GrabCut does).

A polygon is ``engine.masks.mask_to_polygon`` of the box's mask (largest outer contour,
Douglas-Peucker simplified to ``tolerance`` pixels, clockwise on screen from the point
nearest the top-left), as a flat ``[x0, y0, x1, y1, ...]`` list in pixels of the image.
SAM's mask may spill out of its box prompt: only the part inside the box is traced, and
the vertices are clipped to the box, so a polygon always lies inside its box. A box whose
mask is empty inside the box gets no polygon (``[]``). Each distinct box (rounded to
0.01 px) is segmented once per image, however many rows share it.

With ``multimask`` SAM proposes three masks per box and the one with the highest
predicted IoU is used; without it, SAM's single-mask output.

Models (segment-anything): ``model_type`` names a builder of ``segment_anything.sam_model_registry``
(``vit_h``/``default``, ``vit_l``, ``vit_b``) and ``checkpoint`` the matching official
``.pth`` file; ``custom`` builds the same SAM through ``segment_anything.build_sam``'s
``_build_sam`` with the image-encoder sizes of ``encoder`` (prompt encoder and mask
decoder are SAM's fixed ones), for checkpoints of other encoder sizes such as the tiny
one the tests build. Either way the checkpoint is a ``state_dict`` loaded strictly, as
segment-anything's builders load it (mapped to the CPU first, so that a checkpoint saved
from a GPU also loads on a machine without one), then moved to ``device``. The image
embeddings, prompt encoding, mask decoding and upscaling are those of segment-anything's
``SamPredictor.predict_torch`` (a test checks the polygons equal the predictor's), done on
a batch of images at once.

Models (transformers): ``SamModel`` and ``SamProcessor``; a local folder's ``config.json``
must say ``model_type: sam`` (checked when the config is read). Boxes are scaled to the
processor's resized input as the processor scales them, masks upscaled with its
``post_process_masks``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator, model_folder_of_type
from engine.masks import mask_to_polygon
from engine.records import Sample
from engine.steps import WorkerContext, resolve_device

# The keys of segment_anything.build_sam.sam_model_registry (kept here so that reading a
# config does not import torch; a test checks they agree).
SAM_MODEL_TYPES = ("default", "vit_h", "vit_l", "vit_b")


@dataclass(config=STRICT)
class SamEncoder:
    """Image-encoder sizes of a ``custom`` SAM (``_build_sam``'s ``encoder_*`` arguments).
    For reference, ``vit_b`` is ``{embed_dim: 768, depth: 12, num_heads: 12,
    global_attn_indexes: [2, 5, 8, 11]}``."""

    embed_dim: Annotated[int, Field(ge=1)]
    depth: Annotated[int, Field(ge=1)]
    num_heads: Annotated[int, Field(ge=1)]
    global_attn_indexes: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> SamEncoder:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"encoder embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        outside = [i for i in self.global_attn_indexes if i >= self.depth]
        if outside:
            raise ValueError(f"encoder global_attn_indexes {outside} are not < depth {self.depth}")
        return self


@dataclass(config=STRICT)
class SamSegmenter(SampleAnnotator):
    """Args:
    checkpoint: path of a segment-anything SAM ``state_dict`` (``sam_vit_b_01ec64.pth``...);
        must exist. Give this or ``model``.
    model: a transformers SAM: hub id (``facebook/sam-vit-base``, read from the local hub
        cache) or local folder. Give this or ``checkpoint``.
    revision: hub revision to pin ``model`` to.
    model_type: (``checkpoint`` only) a ``sam_model_registry`` key (``vit_b``, ``vit_l``, ``vit_h``, ``default``)
        or ``custom`` (then ``encoder`` gives the image-encoder sizes).
    encoder: ``{embed_dim, depth, num_heads, global_attn_indexes}``, for ``custom`` only.
    tolerance: polygon simplification, in pixels of the image.
    segment_regions: also fill ``regions.polygon`` of kept object regions.
    device: ``auto`` (default: the GPU Ray assigned this worker, else CPU; in-process,
            CUDA if torch sees it), or ``cpu``, ``cuda:0``...
    multimask: ask SAM for three masks per box and keep the best by predicted IoU.
    max_boxes_per_call: split an image's boxes into calls of at most this many (memory:
        each box costs a copy of the 256x64x64 image embedding and a full-size mask);
        ``None``: all boxes of an image in one call.
    batch_size: images per image-encoder pass.
    dtype: ``float32``, or ``float16``/``bfloat16`` on a GPU (masks are thresholded in
        float32).
    """

    name: ClassVar[str] = "sam_segmenter"
    version: ClassVar[str] = "1"
    stage: ClassVar[str] = "masks"

    checkpoint: str | None = None
    model: str | None = None
    revision: str | None = None
    model_type: str = "vit_b"
    encoder: SamEncoder | None = None
    tolerance: Annotated[float, Field(gt=0.0)] = 2.0
    segment_regions: bool = True
    device: str = "auto"
    multimask: bool = False
    max_boxes_per_call: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=256)] = 4
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_found(cls, checkpoint: str | None) -> str | None:
        if checkpoint is None:
            return None
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ValueError(f"checkpoint file not found: {checkpoint}")
        return str(path.resolve())

    @field_validator("model_type")
    @classmethod
    def _known_model_type(cls, model_type: str) -> str:
        if model_type not in (*SAM_MODEL_TYPES, "custom"):
            raise ValueError(
                f"unknown model_type {model_type!r}; known: {[*SAM_MODEL_TYPES, 'custom']}"
            )
        return model_type

    @field_validator("model")
    @classmethod
    def _model_found(cls, model: str | None) -> str | None:
        return None if model is None else model_folder_of_type(model, ("sam",))

    @model_validator(mode="after")
    def _encoder_for_custom(self) -> SamSegmenter:
        if (self.checkpoint is None) == (self.model is None):
            raise ValueError("give either checkpoint (segment-anything) or model (transformers)")
        if self.model_type == "custom" and self.encoder is None:
            raise ValueError("model_type custom needs encoder: {embed_dim, depth, num_heads, ...}")
        if self.model_type != "custom" and self.encoder is not None:
            raise ValueError(f"encoder is for model_type custom only (not {self.model_type!r})")
        return self

    # ------------------------------------------------------------------ model

    def build(self, device: str = "cpu"):
        """The ``Sam`` module with the checkpoint's weights, on ``device``, in eval mode."""
        import torch
        from segment_anything.build_sam import _build_sam, sam_model_registry

        if self.model_type == "custom":
            sam = _build_sam(
                encoder_embed_dim=self.encoder.embed_dim,
                encoder_depth=self.encoder.depth,
                encoder_num_heads=self.encoder.num_heads,
                encoder_global_attn_indexes=list(self.encoder.global_attn_indexes),
            )
        else:
            sam = sam_model_registry[self.model_type]()
        state_dict = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        try:
            sam.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise ValueError(
                f"{self.checkpoint} does not fit a SAM of model_type {self.model_type!r}"
                f"{' with encoder ' + str(self.encoder) if self.encoder else ''}: {exc}"
            ) from exc
        return sam.to(device).eval()

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        self._device = resolve_device(self.device, worker)
        if self.checkpoint is not None:
            self._backend = SegmentAnythingBackend(self.build(self._device), self.dtype)
        else:
            self._backend = TransformersSamBackend(self, self._device)

    def models(self) -> list:
        return [self._backend.model]

    # ------------------------------------------------------------------ annotate

    def annotate_samples(self, samples: list[Sample]) -> None:
        # Segment every image before changing any sample: if one image fails, the batch
        # is left as it was (the pipeline then retries image by image).
        jobs = []
        for sample in samples:
            phrases = [p for p in sample.phrases if p.kept and p.box is not None and not p.polygon]
            regions = (
                [r for r in sample.kept_regions if r.kind == "object"]
                if self.segment_regions
                else []
            )
            boxes: dict[tuple, tuple] = {}
            for box in [p.box for p in phrases] + [r.box for r in regions]:
                boxes.setdefault(box_key(box), tuple(float(v) for v in box))
            if boxes:
                jobs.append((sample, phrases, regions, boxes))
        polygons = self.segment(
            [sample.pixels for sample, *_ in jobs], [list(boxes.values()) for *_, boxes in jobs]
        )
        for (_, phrases, regions, boxes), image_polygons in zip(jobs, polygons, strict=True):
            by_box = dict(zip(boxes, image_polygons, strict=True))
            for phrase in phrases:
                phrase.polygon = list(by_box[box_key(phrase.box)])
            for region in regions:
                region.polygon = list(by_box[box_key(region.box)])

    def segment(
        self, images: list[np.ndarray], boxes: list[list[tuple]]
    ) -> list[list[list[float]]]:
        """Per image, one polygon per box (``[]`` where the mask is empty inside the box):
        ``batch_size`` images per image-encoder pass, then per image one batched decoder
        call per ``max_boxes_per_call`` boxes."""
        polygons: list[list[list[float]]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            embedded = self._backend.embed(chunk)
            for index, image_boxes in enumerate(boxes[start : start + self.batch_size]):
                step = self.max_boxes_per_call or len(image_boxes)
                image_polygons: list[list[float]] = []
                for first in range(0, len(image_boxes), step):
                    part = image_boxes[first : first + step]
                    masks = self._backend.masks(embedded, index, part, self.multimask)
                    image_polygons += [
                        self.box_polygon(crop, box)
                        for crop, box in zip(crops(masks, part), part, strict=True)
                    ]
                polygons.append(image_polygons)
        return polygons

    def box_polygon(self, crop: tuple[np.ndarray, int, int], box: tuple) -> list[float]:
        """The polygon of a mask's part inside ``box`` (``crop``: that part as an array
        and its offset ``(ix0, iy0)`` in the image), its vertices clipped to the box."""
        mask, ix0, iy0 = crop
        if mask.size == 0:
            return []
        x0, y0, x1, y1 = box
        polygon = mask_to_polygon(mask, self.tolerance, offset=(ix0, iy0))
        if not polygon:
            return []
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        points[:, 0] = points[:, 0].clip(x0, x1)
        points[:, 1] = points[:, 1].clip(y0, y1)
        return [round(float(v), 1) for v in points.reshape(-1)]


def crops(masks, boxes: list[tuple]) -> list[tuple[np.ndarray, int, int]]:
    """Each box's part of its mask (``masks``: boxes x H x W bool, on the model's device),
    copied to the CPU alone, with its offset: the rest of a full-size mask never leaves
    the device."""
    height, width = masks.shape[-2:]
    parts = []
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        ix0, iy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        ix1, iy1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
        if ix1 <= ix0 or iy1 <= iy0:
            parts.append((np.zeros((0, 0), dtype=bool), ix0, iy0))
            continue
        parts.append((mask[iy0:iy1, ix0:ix1].cpu().numpy(), ix0, iy0))
    return parts


def box_key(box: tuple) -> tuple:
    return tuple(round(float(v), 2) for v in box)


class SegmentAnythingBackend:
    """segment-anything's ``Sam``: ``SamPredictor.predict_torch``'s steps over a batch."""

    def __init__(self, sam, dtype: str) -> None:
        import torch
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam
        self.model = sam
        self.dtype = getattr(torch, dtype)
        if self.dtype != torch.float32:
            sam.image_encoder.to(self.dtype)  # the heavy part; decoder stays float32
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)

    def embed(self, images: list[np.ndarray]) -> dict:
        import torch

        device = self.sam.device
        inputs, sizes = [], []
        for pixels in images:
            resized = self.transform.apply_image(np.ascontiguousarray(pixels))
            tensor = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()
            inputs.append(self.sam.preprocess(tensor[None].float()))  # normalised, padded
            sizes.append((tuple(resized.shape[:2]), tuple(pixels.shape[:2])))
        with torch.inference_mode():
            embeddings = self.sam.image_encoder(torch.cat(inputs).to(self.dtype)).float()
        return {"embeddings": embeddings, "sizes": sizes}

    def masks(self, embedded: dict, index: int, boxes: list[tuple], multimask: bool):
        """Boolean masks (boxes x H x W) at the image's size, on the device."""
        import torch

        sam = self.sam
        input_size, original_size = embedded["sizes"][index]
        prompts = torch.as_tensor(boxes, dtype=torch.float32, device=sam.device)
        with torch.inference_mode():
            sparse, dense = sam.prompt_encoder(
                points=None,
                boxes=self.transform.apply_boxes_torch(prompts, original_size),
                masks=None,
            )
            low_res, iou = sam.mask_decoder(
                image_embeddings=embedded["embeddings"][index : index + 1],
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
            masks = sam.postprocess_masks(low_res, input_size, original_size) > sam.mask_threshold
            best = iou.argmax(dim=1)
            return masks[torch.arange(len(boxes), device=masks.device), best]


class TransformersSamBackend:
    """transformers' ``SamModel``: image embeddings for the batch in one pass, then each
    image's boxes through ``SamModel(image_embeddings=..., input_boxes=...)``."""

    def __init__(self, segmenter: SamSegmenter, device: str) -> None:
        from engine.offline import apply_offline_env

        apply_offline_env()
        import torch
        from transformers import SamModel, SamProcessor

        options = {"revision": segmenter.revision} if segmenter.revision else {}
        self.device, self.dtype = device, getattr(torch, segmenter.dtype)
        self.processor = SamProcessor.from_pretrained(segmenter.model, **options)
        self.model = SamModel.from_pretrained(segmenter.model, dtype=self.dtype, **options)
        self.model.to(device).eval()

    def embed(self, images: list[np.ndarray]) -> dict:
        import torch
        from PIL import Image

        inputs = self.processor(
            images=[Image.fromarray(pixels).convert("RGB") for pixels in images],
            return_tensors="pt",
        )
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(
                inputs["pixel_values"].to(self.device, self.dtype)
            )
        return {
            "embeddings": embeddings,
            "original_sizes": inputs["original_sizes"],
            "reshaped_input_sizes": inputs["reshaped_input_sizes"],
        }

    def masks(self, embedded: dict, index: int, boxes: list[tuple], multimask: bool):
        """Boolean masks (boxes x H x W) at the image's size, on the device."""
        import torch

        original = embedded["original_sizes"][index : index + 1]
        reshaped = embedded["reshaped_input_sizes"][index : index + 1]
        (old_h, old_w), (new_h, new_w) = original[0].tolist(), reshaped[0].tolist()
        scale = torch.tensor([new_w / old_w, new_h / old_h] * 2, dtype=torch.float32)
        prompts = (torch.as_tensor(boxes, dtype=torch.float32) * scale)[None].to(self.device)
        with torch.inference_mode():
            outputs = self.model(
                image_embeddings=embedded["embeddings"][index : index + 1],
                input_boxes=prompts.to(self.dtype),
                multimask_output=multimask,
            )
            masks = self.processor.image_processor.post_process_masks(
                outputs.pred_masks.float(), original, reshaped, binarize=True
            )[0]  # (boxes, 1 or 3, H, W) bool
            best = outputs.iou_scores[0].argmax(dim=1)
            return masks[torch.arange(len(boxes), device=masks.device), best.to(masks.device)]
