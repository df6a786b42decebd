"""The Florence-2 student: fine-tune a transformers ``Florence2ForConditionalGeneration``
on one committed iteration's ``florence2`` export (``fld train``, and ``fld refine`` with
``refine.student.kind: florence2``).

``train_florence2(corpus, iteration, out, settings)`` writes into ``out``:

- ``export/florence2.jsonl``: the iteration's export (every task it has, kept rows);
- ``checkpoint.json`` + ``checkpoint-<step>/``: the last checkpoint (weights, optimizer,
  scheduler, RNG state, where in the data it was), every ``checkpoint_every`` optimizer
  steps; a rerun after a kill resumes from it and ends with the same weights as an
  uninterrupted run (the data order is a function of the seed and the epoch alone);
- ``model/``: the trained model and processor (``save_pretrained``: safetensors, no
  pickle), then ``train.json``, its summary (losses, tokens/s, examples per task, the
  weights' SHA-256); ``train.json`` is written last: its presence means done.

Data: the export is read line by line (memory flat in the corpus size): a line belongs to
the validation split when its ``image_id``'s hash falls under ``val_fraction``; training
lines are repeated or thinned per ``task_weights``, shuffled within a
``shuffle_buffer``-line window, batched, their images read through the corpus
(``Corpus.load_image``, decoded as the iteration decoded them, so coordinates apply). The
inputs are the processor's ``(images, prompt)`` (a prompt too long for the model's
positions is cut at its end); the labels are the tokenized target (``<s> target </s>``,
padding ignored), cut at ``max_target_tokens`` or the model's positions.

Optimisation: AdamW, linear warm-up then linear decay, gradients clipped at norm 1,
``accumulate`` batches per step; on CUDA with ``mixed_precision``, bfloat16 autocast.

(Not ``transformers.Trainer``: it needs ``accelerate``, which the engine does not install,
and the loop below is what exact resume from a streamed export needs, in ~150 lines.)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine.corpus import Corpus, CorpusError, atomic_write_json
from engine.records import file_sha256
from pipelines.student_errors import NoTrainingLabels

EXPORT = "export/florence2.jsonl"
SUMMARY = "train.json"


def split_of(image_id: str, val_fraction: float) -> str:
    """``val`` for the share ``val_fraction`` of images (by a hash of the id), else ``train``."""
    bucket = int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16) / 0x100000000
    return "val" if bucket < val_fraction else "train"


def read_lines(path: Path, split: str, val_fraction: float) -> Iterator[dict]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            example = json.loads(line)
            if split_of(example["image_id"], val_fraction) == split:
                yield example


def weighted(
    lines: Iterable[dict], weights: dict[str, float], rng: random.Random
) -> Iterator[dict]:
    """Each line ``floor(w)`` times plus once more with probability ``w - floor(w)``, ``w``
    its task's weight (1 by default)."""
    for line in lines:
        weight = weights.get(line["task"], 1.0)
        copies = int(weight) + (rng.random() < weight - int(weight))
        for _ in range(copies):
            yield line


def shuffled(items: Iterable[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """A shuffle within a window of ``size`` items (bounded memory)."""
    window: list[dict] = []
    for item in items:
        window.append(item)
        if len(window) >= size:
            yield window.pop(rng.randrange(len(window)))
    rng.shuffle(window)
    yield from window


def epoch_examples(export: Path, settings, epoch: int) -> Iterator[dict]:
    """Epoch ``epoch``'s training examples, in an order fixed by the seed and the epoch."""
    rng = random.Random(f"{settings.seed}:{epoch}")
    lines = read_lines(export, "train", settings.val_fraction)
    return shuffled(weighted(lines, settings.task_weights, rng), settings.shuffle_buffer, rng)


def batches(examples: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for example in examples:
        batch.append(example)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Collator:
    """Examples to model inputs: the processor's pixels and prompt tokens, target labels."""

    def __init__(self, processor, corpus: Corpus, iteration: int, max_tokens: tuple[int, int]):
        """``max_tokens``: the longest encoder input (image tokens + prompt; a longer
        prompt is cut at its end) and the longest target."""
        from engine.sources import ByteReader

        self.processor, self.corpus, self.iteration = processor, corpus, iteration
        self.max_input_tokens, self.max_target_tokens = max_tokens
        self.reader = ByteReader()
        self._images: dict[str, object] = {}

    def image(self, uri: str):
        from PIL import Image

        if uri not in self._images:  # a few recent images: an image's lines come together
            if len(self._images) > 64:
                self._images.pop(next(iter(self._images)))
            pixels = self.corpus.load_image(uri, self.iteration, self.reader)
            self._images[uri] = Image.fromarray(pixels)
        return self._images[uri]

    def __call__(self, examples: list[dict]) -> dict:
        tokenizer = self.processor.tokenizer
        inputs = self.processor(
            images=[self.image(example["image"]) for example in examples],
            text=[example["prompt"] for example in examples],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_input_tokens,
        )
        labels = tokenizer(
            [example["target"] for example in examples],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_target_tokens,
        )["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        inputs["labels"] = labels
        return inputs


def resolve_training_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def ensure_export(corpus: Corpus, iteration: int, out: Path, human=None) -> Path:
    """The training export of ``iteration`` under ``out`` (made once: a resumed training
    reuses it); ``human``: people's labels in place of the models' (``export_corpus``)."""
    from pipelines.exports import export_corpus

    export = out / EXPORT
    done = out / "export" / "export.json"
    if not done.exists():
        export_corpus(corpus.root, "florence2", out / "export", iteration=iteration, overwrite=True, human=human)  # fmt: skip
    if not export.exists() or export.stat().st_size == 0:
        raise NoTrainingLabels(f"iteration {iteration} has no kept labels to train a student on")
    return export


def save_checkpoint(out: Path, model, state: dict) -> None:
    """``checkpoint-<step>/`` (weights + ``state.pt``), then ``checkpoint.json`` pointing at
    it, then older checkpoints removed: a kill at any point leaves one complete checkpoint."""
    import torch

    folder = out / f"checkpoint-{state['step']}"
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    torch.save(state, folder / "state.pt")
    atomic_write_json(out / "checkpoint.json", {"step": state["step"], "folder": folder.name})
    for old in out.glob("checkpoint-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(out: Path):
    """``(folder, state)`` of the last complete checkpoint, or None."""
    import torch

    pointer = out / "checkpoint.json"
    if not pointer.exists():
        return None
    folder = out / json.loads(pointer.read_text())["folder"]
    # weights_only: a checkpoint lies in a corpus folder, which may come from anyone; the
    # state is tensors, numbers, lists and dicts, which the safe unpickler loads.
    return folder, torch.load(folder / "state.pt", weights_only=True)


def validation_loss(model, collator, export: Path, settings, device: str) -> float | None:
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for batch in batches(read_lines(export, "val", settings.val_fraction), settings.batch):
            inputs = collator(batch).to(device)
            total += float(model(**inputs).loss) * len(batch)
            count += len(batch)
    model.train()
    return round(total / count, 4) if count else None


def train_florence2(
    corpus: Corpus, iteration: int, out: Path, settings, show_progress: bool = True
) -> dict:
    """Train (or resume, or find trained) the student on ``iteration``; returns its summary."""
    out = Path(out)
    if (out / SUMMARY).exists():
        return json.loads((out / SUMMARY).read_text())
    if not corpus.is_committed(iteration):
        raise CorpusError(f"iteration {iteration} of {corpus.root} is not committed")
    out.mkdir(parents=True, exist_ok=True)
    export = ensure_export(corpus, iteration, out)

    from engine.offline import apply_offline_env

    apply_offline_env()
    import torch
    from tqdm import tqdm
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    device = resolve_training_device(settings.device)
    autocast = device.startswith("cuda") and settings.mixed_precision
    torch.manual_seed(settings.seed)
    processor = AutoProcessor.from_pretrained(settings.model)
    checkpoint = load_checkpoint(out)
    source = checkpoint[0] if checkpoint else settings.model
    model = Florence2ForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    model.to(device).train()
    positions = int(model.config.text_config.max_position_embeddings)
    collator = Collator(
        processor, corpus, iteration, (positions, min(settings.max_target_tokens, positions))
    )
    per_epoch = sum(1 for _ in epoch_examples(export, settings, 0))
    if per_epoch == 0:
        raise CorpusError(f"iteration {iteration}: every exported line is in the validation split")
    steps_per_epoch = math.ceil(math.ceil(per_epoch / settings.batch) / settings.accumulate)
    total_steps = steps_per_epoch * settings.epochs
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )

    def schedule(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - settings.warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    state = {"step": 0, "epoch": 0, "batches_done": 0, "losses": [], "tasks": {}, "tokens": 0}
    if checkpoint:
        state = checkpoint[1]
        optimizer.load_state_dict(state.pop("optimizer"))
        scheduler.load_state_dict(state.pop("scheduler"))
        torch.set_rng_state(state.pop("rng"))
    tasks = Counter(state["tasks"])
    started, tokens_at_start = time.time(), state["tokens"]
    progress = tqdm(
        total=total_steps, initial=state["step"], unit="step", desc=f"florence2 student ({device})",
        disable=not show_progress, file=sys.stderr, dynamic_ncols=True,
    )  # fmt: skip

    def optimizer_step(window: list[float]) -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["losses"].append(round(sum(window) / len(window), 5))
        progress.update(1)
        progress.set_postfix(
            loss=state["losses"][-1],
            tokens_per_s=round(
                (state["tokens"] - tokens_at_start) / max(time.time() - started, 1e-9)
            ),
        )
        if state["step"] % settings.checkpoint_every == 0:
            state["tasks"] = dict(tasks)
            extra = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
            }
            save_checkpoint(out, model, {**state, **extra})

    for epoch in range(state["epoch"], settings.epochs):
        skip = state["batches_done"] if epoch == state["epoch"] else 0
        window: list[float] = []
        stream = batches(epoch_examples(export, settings, epoch), settings.batch)
        for index, batch in enumerate(stream):
            if index < skip:
                continue
            inputs = collator(batch).to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss = model(**inputs).loss
            (loss / settings.accumulate).backward()
            window.append(loss.item())
            tasks.update(example["task"] for example in batch)
            labelled = int((inputs["labels"] != -100).sum())
            state["tokens"] += labelled + int(inputs["attention_mask"].sum())
            state["batches_done"] = index + 1
            if len(window) == settings.accumulate:
                optimizer_step(window)
                window = []
        if window:  # the epoch's last, shorter accumulation
            optimizer_step(window)
        state["epoch"], state["batches_done"] = epoch + 1, 0
    progress.close()
    val_loss = validation_loss(model, collator, export, settings, device)
    final = out / "model"
    temporary = out / "model.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    processor.save_pretrained(temporary)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    losses = state["losses"]
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10) :]
    summary = {
        "kind": "florence2",
        "model": settings.model,
        "trained_on_iteration": iteration,
        "device": device,
        "mixed_precision": autocast,
        "epochs": settings.epochs,
        "steps": state["step"],
        "examples_per_task": dict(sorted(tasks.items())),
        "loss_first": round(sum(head) / len(head), 4) if losses else None,
        "loss_last": round(sum(tail) / len(tail), 4) if losses else None,
        "losses": losses,
        "val_loss": val_loss,
        "tokens_per_s": round(
            (state["tokens"] - tokens_at_start) / max(time.time() - started, 1e-9)
        ),
        "train_seconds_last_run": round(time.time() - started, 1),
        "sha256": file_sha256(final / "model.safetensors"),
        "settings": settings.model_dump(mode="json"),
    }
    atomic_write_json(out / SUMMARY, summary)
    for old in out.glob("checkpoint*"):
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    return summary
