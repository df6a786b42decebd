"""The SSD student (``refine.student.kind: ssd``): a copy of the ``ssd_coco`` specialist
(``annotators.ssd_network``) fine-tuned on the kept ``object`` regions of a committed
iteration, its pseudo-labels. It starts as good as its teacher; what it learns on a
corpus is the corpus's own objects at other scales, places and backgrounds (an object
found large in one image is found small in another).

``train_ssd_student(data, out, settings)`` writes into ``out``:

- ``checkpoint.pt``: every ``checkpoint_every`` optimizer steps, the network, the
  optimizer and the step (a plain dict of tensors: read back with ``weights_only``); a
  rerun after a kill resumes from it and ends with the same weights as an uninterrupted
  run: the data order is a function of the seed and the epoch, each image's augmentation
  of the seed, the epoch and its index, and training runs on one device with no other
  randomness;
- ``student.safetensors`` (the state dict, no pickle) and ``student.json``, the summary
  (images, boxes, classes, epochs, steps, losses, seconds, the settings and the weights'
  SHA-256). The weights are written under a temporary name, the summary is written, and
  the weights are moved into place last (``os.replace``): a ``student.safetensors`` is
  always complete. ``load_student_state`` refuses a file whose SHA-256 is not the one
  ``student.json`` records, with a sentence naming the file.

The data (``corpus_examples``): per image of the iteration, its kept ``object`` regions of
at least ``min_label_score`` whose label is a COCO category are the boxes to learn; its
other object regions of at least ``ignore_score`` (dropped as low-score, or of a label
that is not COCO's) are *ignore* boxes: anchors on them are neither positive nor
negative, so that the student is not taught that what the teacher half-saw is background.
Images with no box stay in: they teach background.

The recipe (``SsdStudentConfig``; defaults chosen in ``docs/refinement.md``): TF's SSD
loss (``pipelines.ssd_loss``), batch norm frozen (the network stays in eval mode and its
batch-norm parameters are not trained), the stem and the first ``frozen_blocks``
MobileNet blocks frozen, SGD with momentum 0.9, linear warm-up then cosine decay to 0,
weight decay; augmentation by ``pipelines.ssd_augment``. Against forgetting COCO (what a
student that overfits its corpus does on photos it never saw), three knobs:
``mask_unlabelled_classes`` (the classification loss covers the background and the
classes the labels have; the other outputs are not pushed down), ``l2sp_weight`` (an L2
pull of the trained weights toward the teacher's, L2-SP) and ``distill_weight``
(distillation: the student's class probabilities pulled toward the teacher's own on the
same augmented batch, for the columns the labels do not train).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.corpus import Corpus, atomic_write_json
from engine.labels import COCO_LABELS
from engine.records import file_sha256
from pipelines.student_errors import NoTrainingLabels, StudentWeightsRefused

WEIGHTS = "student.safetensors"
SUMMARY = "student.json"
CHECKPOINT = "checkpoint.pt"
COCO_IDS = {name: class_id for class_id, name in COCO_LABELS.items()}


@dataclass
class TrainingImage:
    """One image's pseudo-labels: ``uri`` (read through ``load_image``), ``boxes``
    (``[G, 4]`` pixels, x0, y0, x1, y1), ``classes`` (``[G]`` COCO ids), ``ignore``
    (``[I, 4]`` pixels)."""

    uri: str
    boxes: np.ndarray
    classes: np.ndarray
    ignore: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


@dataclass
class TrainingData:
    """What a student learns from: ``examples``, ``load_image`` (a URI -> its ``HxWx3``
    uint8 RGB pixels, decoded as the labels' iteration decoded them, so that the boxes
    apply) and ``stats`` (counts that go into the summary: ``corpus_examples``'s)."""

    examples: list[TrainingImage]
    load_image: Callable[[str], np.ndarray]
    stats: dict = field(default_factory=dict)


def coco_id(label: str) -> int | None:
    return COCO_IDS.get(" ".join(label.lower().replace("_", " ").split()))


def corpus_examples(
    corpus: Corpus, iteration: int, settings, keep_duplicates: bool = False, human=None
) -> tuple[list[TrainingImage], dict]:
    """Every image of committed ``iteration`` with its pseudo-labels (see the module
    docstring; ``settings``: ``min_label_score``, ``ignore_score``), in URI order, and
    counts of what was read; copies of another image left out unless ``keep_duplicates``.
    ``human`` (``engine.reviews.HumanLabels``): on reviewed images people's object boxes
    replace the pseudo-labels (a label that is no COCO class is ignored, not background),
    and hold-out images are left out: they judge the iterations."""
    from engine.query import connect

    # Copies of an image (duplicate groups' members that are not the representative) are
    # left out unless ``keep_duplicates``: a student would see them as more examples.
    connection = connect(corpus.root, [iteration], duplicates="view" if keep_duplicates else "skip")
    try:
        rows = connection.execute(
            "SELECT i.uri, i.image_id, r.label, r.score, r.kept, r.x0, r.y0, r.x1, r.y1 FROM images i "
            "LEFT JOIN regions r ON r.image_id = i.image_id AND r.kind = 'object' "
            "ORDER BY i.uri, r.region_id"
        ).fetchall()
    finally:
        connection.close()
    by_uri: dict[str, dict[str, list]] = {}
    counts: Counter = Counter()
    holdout = human.holdout if human is not None else set()
    reviewed = human.trained if human is not None else set()
    held_out_uris: set[str] = set()
    reviewed_uris: set[str] = set()
    for uri, image_id, label, score, kept, *box in rows:
        if image_id in holdout:
            held_out_uris.add(uri)
            continue
        entry = by_uri.setdefault(uri, {"boxes": [], "classes": [], "ignore": []})
        if image_id in reviewed:
            if uri not in reviewed_uris:  # people's boxes once per image, not per model row
                reviewed_uris.add(uri)
                for kind, human_label, human_box in human.boxes[image_id]:
                    if kind != "object":
                        continue
                    class_id = coco_id(human_label)
                    if class_id is None:
                        entry["ignore"].append(list(human_box))
                        continue
                    entry["boxes"].append(list(human_box))
                    entry["classes"].append(class_id)
                    counts[f"label:{COCO_LABELS[class_id]}"] += 1
            continue
        if label is None:
            continue
        class_id = coco_id(label)
        if kept and score >= settings.min_label_score and class_id is not None:
            entry["boxes"].append(box)
            entry["classes"].append(class_id)
            counts[f"label:{COCO_LABELS[class_id]}"] += 1
        elif score >= settings.ignore_score:
            entry["ignore"].append(box)
            counts["ignored_boxes"] += 1
            counts["not_coco_labels"] += kept and class_id is None
    rare = rare_classes(by_uri, settings.min_class_labels)
    for entry in by_uri.values():
        for box, class_id in zip(entry["boxes"], entry["classes"], strict=True):
            if class_id in rare:  # too few labels to learn from: neither taught nor background
                entry["ignore"].append(box)
        entry["boxes"] = [b for b, c in zip(entry["boxes"], entry["classes"], strict=True) if c not in rare]  # fmt: skip
        entry["classes"] = [c for c in entry["classes"] if c not in rare]
    examples = [
        TrainingImage(
            uri,
            np.asarray(entry["boxes"], np.float32).reshape(-1, 4),
            np.asarray(entry["classes"], np.int64),
            np.asarray(entry["ignore"], np.float32).reshape(-1, 4),
        )
        for uri, entry in by_uri.items()
    ]
    stats = {
        "images": len(examples),
        "images_with_labels": sum(len(e.classes) > 0 for e in examples),
        "boxes": sum(len(e.classes) for e in examples),
        "ignored_boxes": counts["ignored_boxes"],
        "kept_labels_not_coco": counts["not_coco_labels"],
        "reviewed_images": len(reviewed_uris),  # people's labels in place of the models'
        "holdout_images_left_out": len(held_out_uris),
        "classes": {
            k.split(":", 1)[1]: v
            for k, v in sorted(counts.items())
            if k.startswith("label:") and COCO_IDS[k.split(":", 1)[1]] not in rare
        },
        "rare_classes_ignored": {COCO_LABELS[c]: n for c, n in sorted(rare.items())},
    }
    return examples, stats


def rare_classes(by_uri: dict[str, dict[str, list]], min_labels: int) -> dict[int, int]:
    """The COCO ids with fewer than ``min_labels`` labels over all images, and their counts:
    a class seen once or twice among pseudo-labels is as likely the teacher's mistake as a
    class of the corpus, and a student taught it learns the mistake."""
    per_class = Counter(c for entry in by_uri.values() for c in entry["classes"])
    return {c: n for c, n in per_class.items() if n < min_labels}


# --------------------------------------------------------------------------- the network


def trained_class_mask(examples: list[TrainingImage]):
    """The output columns the labels train: the background (0) and every labelled class."""
    import torch

    from annotators.ssd_network import NUM_CLASSES

    mask = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    mask[0] = True
    for example in examples:
        mask[torch.as_tensor(example.classes, dtype=torch.long)] = True
    return mask


def build_student(teacher_state: dict, settings):
    """The network with the teacher's weights, in eval mode (batch norm frozen), with only
    the trained parameters requiring gradients: the box predictors always; the MobileNet
    blocks from ``frozen_blocks`` on, its last conv and the extra layers unless
    ``heads_only``. Batch-norm parameters are never trained."""
    from torch import nn

    from annotators.ssd_network import SSDMobileNetV2

    network = SSDMobileNetV2()
    network.load_state_dict(teacher_state)
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    trained: list[nn.Module] = list(network.predictors)
    if not settings.heads_only:
        trained += [*network.blocks[settings.frozen_blocks :], network.last_conv, *network.extras]
    for module in trained:
        for name, parameter in module.named_parameters():
            if ".bn." not in f".{name}":
                parameter.requires_grad_(True)
    return network


def learning_rate_at(step: int, total: int, settings) -> float:
    """Linear warm-up over ``warmup_steps`` (from a tenth of the rate), then cosine to 0."""
    base = settings.learning_rate
    if step < settings.warmup_steps:
        return base * (0.1 + 0.9 * step / settings.warmup_steps)
    span = max(1, total - settings.warmup_steps)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - settings.warmup_steps) / span)))


# --------------------------------------------------------------------------- data


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(count)


def make_batch(examples: list[TrainingImage], indexes, epoch: int, load_image, settings):
    """The batch of ``indexes`` in ``epoch``: pixels ``[B, 3, S, S]`` (float, 0-255,
    channels-last) and one ``ssd_loss.ImageTargets`` per image."""
    import torch

    from pipelines.ssd_augment import AugmentSettings, augment
    from pipelines.ssd_loss import ImageTargets

    augment_settings = AugmentSettings(
        input_size=settings.input_size,
        colour_jitter=settings.colour_jitter,
        zoom_out_probability=settings.zoom_out_probability,
        zoom_out_max=settings.zoom_out_max,
        crop_probability=settings.crop_probability,
        flip_probability=settings.flip_probability,
    )
    pixels, targets = [], []
    for index in indexes:
        example = examples[int(index)]
        rng = np.random.default_rng([settings.seed, epoch, int(index)])
        out = augment(load_image(example.uri), example.boxes, example.ignore, augment_settings, rng)
        pixels.append(out.pixels)
        targets.append(
            ImageTargets(
                torch.from_numpy(out.boxes),
                torch.from_numpy(example.classes[out.kept]),
                torch.from_numpy(out.ignore),
            )
        )
    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float()
    return batch.contiguous(memory_format=torch.channels_last), targets


# --------------------------------------------------------------------------- training


@dataclass
class TrainingState:
    """What a checkpoint holds besides the network and the optimizer: the optimizer
    ``step`` reached and the per-step losses so far (``total``, ``classification``,
    ``localization``, ``anchoring``: L2-SP plus distillation)."""

    step: int = 0
    losses: dict[str, list[float]] = field(
        default_factory=lambda: {
            "total": [],
            "classification": [],
            "localization": [],
            "anchoring": [],
        }
    )


def save_checkpoint(out: Path, network, optimizer, state: TrainingState) -> None:
    import torch

    temporary = out / f"{CHECKPOINT}.tmp"
    torch.save(
        {
            "network": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": state.step,
            "losses": state.losses,
        },
        temporary,
    )
    os.replace(temporary, out / CHECKPOINT)


def load_checkpoint(out: Path, network, optimizer) -> TrainingState:
    """The state of the last checkpoint, loaded into ``network`` and ``optimizer``; a fresh
    state when there is none. ``weights_only``: a checkpoint lies in a corpus folder, which
    may come from anyone."""
    import torch

    path = out / CHECKPOINT
    if not path.exists():
        return TrainingState()
    saved = torch.load(path, weights_only=True, map_location=next(network.parameters()).device)
    network.load_state_dict(saved["network"])
    optimizer.load_state_dict(saved["optimizer"])
    return TrainingState(int(saved["step"]), saved["losses"])


class Anchoring:
    """The terms that hold the student near what the teacher knew: L2-SP (``l2sp_weight``
    times half the squared distance of the trained weights to the teacher's) and
    distillation (``distill_weight`` times the sigmoid cross-entropy of the student's class
    logits against the teacher's probabilities on the same batch, over the columns the
    labels do not train, divided by the batch's positives like the SSD loss)."""

    def __init__(self, network, teacher_state: dict, mask, settings):
        import torch

        self.l2sp_weight, self.distill_weight = settings.l2sp_weight, settings.distill_weight
        self.anchors = {
            name: teacher_state[name].to(parameter.device, copy=True)
            for name, parameter in network.named_parameters()
            if parameter.requires_grad
        }
        self.teacher = None
        if self.distill_weight > 0:
            from annotators.ssd_network import SSDMobileNetV2

            self.teacher = SSDMobileNetV2()
            self.teacher.load_state_dict(teacher_state)
            device = next(network.parameters()).device
            self.teacher.eval().to(device, memory_format=torch.channels_last)
        self.columns = ~mask

    def __call__(self, network, pixels, logits, positives: int):
        import torch
        import torch.nn.functional as F

        total = logits.new_zeros(())
        if self.l2sp_weight > 0:
            for name, parameter in network.named_parameters():
                if name in self.anchors:
                    total = (
                        total
                        + 0.5 * self.l2sp_weight * (parameter - self.anchors[name]).pow(2).sum()
                    )
        if self.teacher is not None and self.columns.any():
            with torch.no_grad():
                _, teacher_logits, _ = self.teacher(pixels)
            columns = self.columns.to(logits.device)
            soft = torch.sigmoid(teacher_logits[..., columns])
            distill = F.binary_cross_entropy_with_logits(
                logits[..., columns], soft, reduction="sum"
            )
            total = total + self.distill_weight * distill / max(positives, 1)
        return total


def training_device(wanted: str) -> str:
    """The device the student trains on: ``auto`` is the first CUDA device torch sees (in a
    Ray task given a GPU, the one Ray assigned), else the CPU; anything else as given."""
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def trained_on(device) -> dict:
    """Where the training ran, for ``student.json``: the torch device, the process, and
    the GPU ids Ray gave it (empty outside a Ray task, or in one that asked for none)."""
    ray = sys.modules.get("ray")  # imported only where Ray runs this: not imported here
    gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()] if ray and ray.is_initialized() else []
    return {"device": str(device), "pid": os.getpid(), "ray_gpu_ids": gpu_ids}


def teacher_state(settings) -> dict:
    """The specialist's weights: the graph in ``settings.model_dir``, converted once and
    cached (``ssd_network.cached_state_dict``)."""
    from annotators.ssd_coco import GRAPH_FILE
    from annotators.ssd_network import cached_state_dict

    return cached_state_dict(Path(settings.model_dir) / GRAPH_FILE)


def train_ssd_student(data: TrainingData, out: Path, settings, show_progress: bool = True) -> dict:
    """Train (or resume, or find trained) the SSD student on ``data`` into ``out``;
    returns its summary (``student.json``). ``settings``: a
    ``pipelines.config.SsdStudentConfig``."""
    out = Path(out)
    examples = data.examples
    if (out / SUMMARY).exists() and (out / WEIGHTS).exists():
        summary = json.loads((out / SUMMARY).read_text())
        check_student_weights(out / WEIGHTS, summary)
        return summary
    if not any(len(example.classes) for example in examples):
        raise NoTrainingLabels("no kept object region with a COCO label to train an SSD student on")
    import torch
    from safetensors.torch import save_file

    from annotators.ssd_network import ssd_anchors
    from pipelines.ssd_loss import LossSettings, ssd_loss

    out.mkdir(parents=True, exist_ok=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    started = time.time()
    device = torch.device(training_device(settings.train_device))
    teacher = teacher_state(settings)
    network = build_student(teacher, settings).to(device, memory_format=torch.channels_last)
    trained = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        trained, lr=settings.learning_rate, momentum=0.9, weight_decay=settings.weight_decay
    )
    state = load_checkpoint(out, network, optimizer)
    resumed_from = state.step
    mask = trained_class_mask(examples)
    loss_settings = LossSettings(
        settings.negatives_per_positive, 3, mask if settings.mask_unlabelled_classes else None
    )
    anchoring = Anchoring(network, teacher, mask, settings)
    per_epoch = math.ceil(len(examples) / settings.batch)
    total_steps = per_epoch * settings.epochs
    anchors = None
    while state.step < total_steps:
        epoch, position = divmod(state.step, per_epoch)
        indexes = epoch_order(len(examples), settings.seed, epoch)
        indexes = indexes[position * settings.batch : (position + 1) * settings.batch]
        pixels, targets = make_batch(examples, indexes, epoch, data.load_image, settings)
        pixels = pixels.to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(state.step, total_steps, settings)
        encodings, logits, map_sizes = network(pixels)
        if anchors is None:
            anchors = ssd_anchors(map_sizes).to(device)
        parts = ssd_loss((encodings, logits), anchors, targets, loss_settings)
        extra = anchoring(network, pixels, logits, parts.positives)
        optimizer.zero_grad(set_to_none=True)
        (parts.total + extra).backward()
        optimizer.step()
        state.step += 1
        for key, value in (
            ("total", parts.total + extra),
            ("classification", parts.classification),
            ("localization", parts.localization),
            ("anchoring", extra),
        ):
            state.losses[key].append(round(float(value.detach()), 5))
        if show_progress and (state.step % 10 == 0 or state.step == total_steps):
            print(
                f"ssd student: step {state.step}/{total_steps} (epoch {epoch + 1}), "
                f"loss {np.mean(state.losses['total'][-10:]):.4f}",
                file=sys.stderr,
            )
        if state.step % settings.checkpoint_every == 0 and state.step < total_steps:
            save_checkpoint(out, network, optimizer, state)
    temporary = out / f".{WEIGHTS}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, str(temporary))  # fmt: skip
    summary = {
        "kind": "ssd",
        "weights": WEIGHTS,
        **data.stats,
        "sha256": file_sha256(temporary),
        "epochs": settings.epochs,
        "steps": state.step,
        "steps_per_epoch": per_epoch,
        "resumed_from_step": resumed_from,
        "trained_classes": [
            COCO_LABELS[int(i)] for i in mask.nonzero().flatten().tolist() if int(i)
        ],
        "loss_per_epoch": epoch_means(state.losses, per_epoch),
        "train_seconds_last_run": round(time.time() - started, 1),
        "trained_on": trained_on(device),
        "settings": settings.model_dump(mode="json"),
    }
    atomic_write_json(out / SUMMARY, summary)
    os.replace(temporary, out / WEIGHTS)  # last: its presence means the student is complete
    (out / CHECKPOINT).unlink(missing_ok=True)
    return summary


def epoch_means(losses: dict[str, list[float]], per_epoch: int) -> dict[str, list[float]]:
    return {
        key: [
            round(float(np.mean(values[i : i + per_epoch])), 4)
            for i in range(0, len(values), per_epoch)
        ]
        for key, values in losses.items()
    }


def check_student_weights(weights: Path, summary: dict) -> None:
    """Refuse (``StudentWeightsRefused``, naming the file) weights whose SHA-256 is not the
    one their summary records."""
    actual = file_sha256(weights)
    if summary.get("sha256") != actual:
        raise StudentWeightsRefused(
            f"{weights}: its SHA-256 ({actual[:16]}...) is not the one recorded when it was "
            f"trained ({str(summary.get('sha256'))[:16]}..., in {weights.parent / SUMMARY}); "
            "refusing to load it (delete the folder to train the student again)"
        )
