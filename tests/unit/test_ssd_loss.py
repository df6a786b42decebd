"""The SSD student's loss (``pipelines.ssd_loss``) and augmentation
(``pipelines.ssd_augment``) on hand-made anchors and boxes: the box coder is
``decode_boxes``'s inverse, a box lying exactly on an anchor costs nothing to localise,
matching forces every box an anchor, ignore boxes leave their anchors out, hard negatives
are three per positive, and augmentation moves boxes with the pixels."""

from __future__ import annotations

import numpy as np
import torch

from annotators.ssd_network import NUM_CLASSES, decode_boxes, ssd_anchors
from pipelines.ssd_augment import AugmentSettings, augment, plain
from pipelines.ssd_loss import (
    IGNORED,
    UNMATCHED,
    ImageTargets,
    LossSettings,
    anchor_corners,
    encode_boxes,
    match_anchors,
    ssd_loss,
)

MAP_SIZES = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def targets(boxes, classes, ignore=()) -> ImageTargets:
    return ImageTargets(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(classes, dtype=torch.long),
        torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4),
    )


def test_encoding_is_the_inverse_of_decode_boxes():
    anchors = ssd_anchors(MAP_SIZES)
    generator = torch.Generator().manual_seed(0)
    encodings = torch.randn(anchors.shape[0], 4, generator=generator)
    boxes = decode_boxes(encodings, anchors)
    assert torch.allclose(encode_boxes(boxes, anchors), encodings, atol=1e-4)
    # TF's order: (ty, tx, th, tw), scaled 10, 10, 5, 5. A box shifted down by a tenth of
    # its anchor's height and twice as wide encodes as (1, 0, 0, 5 log 2).
    anchor = torch.tensor([[0.5, 0.5, 0.2, 0.2]])  # y, x, h, w
    shifted = torch.tensor([[0.3, 0.42, 0.7, 0.62]])  # x0, y0, x1, y1
    expected = torch.tensor([[1.0, 0.0, 0.0, 5 * np.log(2.0)]], dtype=torch.float32)
    assert torch.allclose(encode_boxes(shifted, anchor), expected, atol=1e-5)


def exact_anchor_case():
    anchors = ssd_anchors(MAP_SIZES)
    corners = anchor_corners(anchors)
    index = 1917 - 6 - 40  # some anchor of the 2x2 map
    return anchors, corners, index


def test_a_box_exactly_on_an_anchor_gives_zero_box_loss():
    anchors, corners, index = exact_anchor_case()
    image = targets([corners[index].tolist()], [18])
    matched = match_anchors(image, corners)
    positives = (matched >= 0).nonzero().squeeze(1)
    assert index in positives.tolist()
    # Predictions that are exactly the encodings of each positive's box: zero localisation.
    encodings = torch.zeros(1, anchors.shape[0], 4)
    encodings[0, positives] = encode_boxes(image.boxes[matched[positives]], anchors[positives])
    logits = torch.zeros(1, anchors.shape[0], NUM_CLASSES)
    parts = ssd_loss((encodings, logits), anchors, [image])
    assert parts.localization.item() < 1e-6
    assert parts.positives == positives.numel()
    # The anchor the box lies on needs no encoding at all: zero predicted, zero loss there.
    only = targets([corners[index].tolist()], [18])
    assert torch.allclose(encode_boxes(only.boxes, anchors[index : index + 1]), torch.zeros(1, 4), atol=1e-5)  # fmt: skip


def test_every_box_gets_an_anchor_and_ignore_boxes_leave_theirs_out():
    anchors, corners, _ = exact_anchor_case()
    tiny = [0.50, 0.50, 0.52, 0.52]  # IoU < 0.5 with every anchor: forced onto its best
    matched = match_anchors(targets([tiny], [1]), corners)
    assert (matched == 0).sum() == 1
    ignore = [0.0, 0.0, 0.5, 0.5]
    matched = match_anchors(targets([tiny], [1], [ignore]), corners)
    assert (matched == IGNORED).sum() >= 1 and (matched == 0).sum() == 1
    assert (matched == UNMATCHED).sum() == anchors.shape[0] - (matched != UNMATCHED).sum()


def test_hard_negatives_are_three_per_positive_and_unlabelled_classes_are_left_alone():
    anchors, corners, index = exact_anchor_case()
    image = targets([corners[index].tolist()], [18])
    positives = int((match_anchors(image, corners) >= 0).sum())
    logits = torch.zeros(1, anchors.shape[0], NUM_CLASSES, requires_grad=True)
    encodings = torch.zeros(1, anchors.shape[0], 4)
    parts = ssd_loss((encodings, logits), anchors, [image])
    assert parts.negatives == 3 * positives
    assert ssd_loss((encodings, logits), anchors, [targets([], [])]).negatives == 3  # the minimum
    mask = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    mask[[0, 18]] = True
    masked = ssd_loss((encodings, logits), anchors, [image], LossSettings(trained_classes=mask))
    masked.total.backward()
    gradient = logits.grad[0]
    assert gradient[:, [0, 18]].abs().sum() > 0
    assert gradient[:, 1:18].abs().sum() == 0 and gradient[:, 19:].abs().sum() == 0
    # Zero logits are sigmoid 0.5: each counted anchor costs log 2 per trained column.
    counted = positives + 3 * positives
    expected = counted * 2 * np.log(2.0) / positives
    assert abs(masked.classification.item() - expected) < 1e-4


def test_augmentation_moves_boxes_with_the_pixels():
    """A white square on black: wherever zoom, crop and flip put it, its box is where
    the white pixels are."""
    image = np.zeros((240, 320, 3), np.uint8)
    image[60:140, 100:180] = 255
    box = np.array([[100, 60, 180, 140]], np.float32)
    settings = AugmentSettings(input_size=300, colour_jitter=0.0, crop_probability=1.0)
    checked = 0
    for seed in range(40):
        out = augment(image, box, np.zeros((0, 4)), settings, np.random.default_rng(seed))
        assert out.pixels.shape == (300, 300, 3)
        if not len(out.kept):
            continue
        x0, y0, x1, y1 = out.boxes[0] * 300
        if min(x0, y0) < 2 or max(x1, y1) > 298:
            continue  # cut by the crop: its visible part is what the box holds
        white = out.pixels[..., 0] > 128
        ys, xs = np.nonzero(white)
        assert abs(xs.min() - x0) <= 2 and abs(xs.max() + 1 - x1) <= 2, seed
        assert abs(ys.min() - y0) <= 2 and abs(ys.max() + 1 - y1) <= 2, seed
        checked += 1
    assert checked >= 10
    same = plain(image, box, np.zeros((0, 4)), 300)
    assert np.allclose(same.boxes[0], [100 / 320, 60 / 240, 180 / 320, 140 / 240])
