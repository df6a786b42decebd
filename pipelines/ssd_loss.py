"""The SSD training loss, as the TF Object Detection API trains ``ssd_mobilenet_v2_coco``
(the network of ``annotators.ssd_network``), for the SSD student (``pipelines.ssd_student``).

- **Matching** (``match_anchors``; TF's ``ArgMaxMatcher`` with ``matched_threshold`` =
  ``unmatched_threshold`` = 0.5 and ``force_match_for_each_row``): an anchor whose best
  IoU with a ground-truth box is at least 0.5 is a positive of that box; every box also
  takes its own best anchor, whatever the IoU, so that no box goes unlearned. Anchors
  overlapping an *ignore* box (an uncertain pseudo-label) by at least 0.5 that are not
  positives are neither positive nor negative.
- **Box targets** (``encode_boxes``): TF's ``FasterRcnnBoxCoder``, the exact inverse of
  ``ssd_network.decode_boxes``: ``(ty, tx, th, tw) = (10 dy / ha, 10 dx / wa, 5 log(h / ha),
  5 log(w / wa))`` in that order (TF orders a box encoding y first).
- **Classification**: sigmoid cross-entropy over the 91 outputs (column 0 the background:
  a negative's target is the background column alone, a positive's its class alone),
  summed over the columns that are trained (``trained_classes``: the background and every
  class some training label has; the other classes' outputs get no gradient from the
  labels, so classes the student never saw a label of keep their COCO behaviour).
- **Hard negatives**: per image, the negatives of highest classification loss, at most
  ``negatives_per_positive`` per positive and at least ``min_negatives`` (TF's
  ``HardExampleMiner`` with ``max_negatives_per_positive: 3``, ``min_negatives_per_image:
  3``; its NMS among negatives at IoU 0.99 is left out: it removes next to nothing).
- **Localization**: smooth L1 (Huber, delta 1) on the positives' four encodings, summed.
- Both are divided by the number of positives in the batch (at least 1), and added with
  weight 1 each, as the model's config has them.

Boxes here are normalised ``x0, y0, x1, y1`` (0-1) of the network's input; anchors are
``ssd_network.ssd_anchors``'s ``(y center, x center, height, width)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, box_iou

from annotators.ssd_network import BOX_CODER_SCALES

MATCH_THRESHOLD = 0.5
UNMATCHED = -1  # a negative
IGNORED = -2  # neither positive nor negative


@dataclass(frozen=True)
class ImageTargets:
    """One image's training targets: ``boxes`` ``[G, 4]`` (normalised x0, y0, x1, y1),
    ``classes`` ``[G]`` (COCO ids 1-90, int64), ``ignore`` ``[I, 4]`` (normalised boxes
    whose anchors are left out of the loss)."""

    boxes: torch.Tensor
    classes: torch.Tensor
    ignore: torch.Tensor


@dataclass(frozen=True)
class LossSettings:
    """``negatives_per_positive`` and ``min_negatives``: the hard-negative miner's;
    ``trained_classes``: a bool ``[91]`` mask of the output columns the classification
    loss covers (None: all)."""

    negatives_per_positive: float = 3.0
    min_negatives: int = 3
    trained_classes: torch.Tensor | None = None


def anchor_corners(anchors: torch.Tensor) -> torch.Tensor:
    """``(y center, x center, height, width)`` -> ``(x0, y0, x1, y1)``."""
    yx_hw = anchors[:, [1, 0, 3, 2]]  # as (x center, y center, width, height)
    return box_convert(yx_hw, "cxcywh", "xyxy")


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Boxes ``[M, 4]`` (x0, y0, x1, y1) on their anchors ``[M, 4]`` -> encodings ``[M, 4]``
    (ty, tx, th, tw) that ``ssd_network.decode_boxes`` turns back into the boxes."""
    ya, xa, ha, wa = anchors.unbind(-1)
    cx, cy, w, h = box_convert(boxes, "xyxy", "cxcywh").unbind(-1)
    # A degenerate box (zero side) would give log(0): floored at a thousandth of a pixel's worth.
    w, h = w.clamp(min=1e-6), h.clamp(min=1e-6)
    encoded = torch.stack(
        [(cy - ya) / ha, (cx - xa) / wa, torch.log(h / ha), torch.log(w / wa)], dim=-1
    )
    return encoded * encoded.new_tensor(BOX_CODER_SCALES)


def match_anchors(targets: ImageTargets, corners: torch.Tensor) -> torch.Tensor:
    """Per anchor (``corners`` ``[A, 4]``): the index of the box it must predict, or
    ``UNMATCHED`` (a negative) or ``IGNORED``. See the module docstring."""
    matched = torch.full((corners.shape[0],), UNMATCHED, dtype=torch.long)
    if targets.ignore.numel():
        overlap = box_iou(targets.ignore, corners).max(dim=0).values
        matched[overlap >= MATCH_THRESHOLD] = IGNORED
    if not targets.boxes.numel():
        return matched
    iou = box_iou(targets.boxes, corners)  # [G, A]
    best_iou, best_box = iou.max(dim=0)
    positive = best_iou >= MATCH_THRESHOLD
    matched[positive] = best_box[positive]
    # Each box takes its best anchor (in box order, so that a later box wins a tie as TF's
    # scatter does).
    for box, anchor in enumerate(iou.argmax(dim=1).tolist()):
        matched[anchor] = box
    return matched


def classification_targets(matched: torch.Tensor, classes: torch.Tensor, columns: int) -> torch.Tensor:  # fmt: skip
    """One-hot targets ``[A, columns]``: a positive's class, else the background (column 0)."""
    labels = torch.zeros_like(matched)
    positive = matched >= 0
    labels[positive] = classes[matched[positive]]
    return F.one_hot(labels, columns).float()


def hard_negatives(negative_losses: torch.Tensor, positives: int, settings: LossSettings) -> torch.Tensor:  # fmt: skip
    """The indexes (into ``negative_losses``) of the negatives kept: the highest losses,
    ``negatives_per_positive`` per positive, at least ``min_negatives``."""
    wanted = max(int(settings.negatives_per_positive * positives), settings.min_negatives)
    wanted = min(wanted, negative_losses.numel())
    return torch.topk(negative_losses, wanted).indices


@dataclass
class LossParts:
    """The batch's loss and its parts: ``total`` (what is minimised), ``classification``
    and ``localization`` (each divided by ``positives``), ``positives`` and ``negatives``
    (the anchors that counted)."""

    total: torch.Tensor
    classification: torch.Tensor
    localization: torch.Tensor
    positives: int
    negatives: int


def ssd_loss(
    predictions: tuple[torch.Tensor, torch.Tensor],
    anchors: torch.Tensor,
    targets: list[ImageTargets],
    settings: LossSettings = LossSettings(),  # noqa: B008 - frozen
) -> LossParts:
    """The loss of ``predictions`` (box encodings ``[N, A, 4]``, class logits ``[N, A, 91]``,
    as ``SSDMobileNetV2`` returns them) against one ``ImageTargets`` per image."""
    encodings, logits = predictions
    corners = anchor_corners(anchors)
    columns = logits.shape[-1]
    mask = settings.trained_classes
    column_weight = (
        torch.ones(columns, device=logits.device) if mask is None else mask.float().to(logits.device)
    )  # fmt: skip
    classification = logits.new_zeros(())
    localization = logits.new_zeros(())
    positives = negatives = 0
    for image, image_targets in enumerate(targets):
        matched = match_anchors(image_targets, corners).to(logits.device)
        wanted = classification_targets(matched, image_targets.classes.to(logits.device), columns)
        per_anchor = (
            F.binary_cross_entropy_with_logits(logits[image], wanted, reduction="none")
            * column_weight
        ).sum(dim=-1)
        positive = (matched >= 0).nonzero().squeeze(1)
        negative = (matched == UNMATCHED).nonzero().squeeze(1)
        # Mined on the loss's value only: which negatives count is not differentiated.
        chosen = negative[hard_negatives(per_anchor[negative].detach(), positive.numel(), settings)]
        classification = classification + per_anchor[positive].sum() + per_anchor[chosen].sum()
        if positive.numel():
            boxes = image_targets.boxes.to(logits.device)[matched[positive]]
            wanted_boxes = encode_boxes(boxes, anchors[positive])
            localization = localization + F.smooth_l1_loss(
                encodings[image, positive], wanted_boxes, beta=1.0, reduction="sum"
            )
        positives += positive.numel()
        negatives += chosen.numel()
    normaliser = max(positives, 1)
    classification, localization = classification / normaliser, localization / normaliser
    return LossParts(classification + localization, classification, localization, positives, negatives)  # fmt: skip
