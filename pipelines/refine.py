"""The refinement loop (FLD-5B's third phase): ``fld refine CORPUS --iterations N``.

Iteration k (1 <= k <= N), for every k not yet committed:

1. **Student**: the kept ``object`` regions of iteration k-1 are exported as a YOLO data
   set (``pipelines.exports``, streamed from Parquet) under ``models/iteration=k/data``,
   and an ultralytics YOLO (``refine.student``: by default the built-in student with an
   ImageNet MobileNetV2 backbone, ``annotators.student_models``; or a model YAML from
   scratch, or a ``.pt`` to fine-tune) is trained on them; its weights are moved into place as
   ``models/iteration=k/student.pt`` only when training finished (so a killed training
   is redone from the start, deterministically: fixed seed, no dataloader workers).
2. **Annotate**: iteration k runs the same pipeline as iteration 0 over the same inputs
   and shards, except that the specialists' raw rows of iteration k-1 are replayed
   (``annotators.replay``) instead of running the models again (unless
   ``refine.rerun_specialists``), and the student (``yolo`` with source
   ``student_i<k>@1``) annotates every image. The filters then decide again, fusing the
   student's boxes with the specialists' (``filters.fusion``), and the captioners,
   phrases and masks are made again from the new kept regions.
With ``refine.student.kind: florence2`` the student is a Florence-2 fine-tuned on every
task of iteration k-1's ``florence2`` export (``pipelines.florence2_student``, under
``models/iteration=k/florence2``; a killed training resumes from its last checkpoint),
and in iteration k it runs every task it was trained on through the engine's own
Florence-2 steps, all under the source ``student_f2_i<k>@1``: ``florence2_regions``
(objects, dense region captions, OCR lines with quads), ``hf_captioner`` (the caption
granularities; ``refine.student.florence2.texts`` says whether they are added to the
specialists' captions, replace them, or are not written) and ``hf_grounder`` (its own
captions' phrases, with ``<CAPTION_TO_PHRASE_GROUNDING>``; other phrases are grounded by
the configured grounder as before) and ``florence2_segmenter`` (``<REGION_TO_SEGMENTATION>``
polygons of its own rows, drawn after the configured segmenter's).

With ``refine.student.kind: ssd`` the student is a copy of the ``ssd_coco`` specialist
fine-tuned on iteration k-1's kept object regions (``pipelines.ssd_student``, under
``models/iteration=k``: ``student.safetensors`` and its summary ``student.json``; a killed
training resumes from its last checkpoint), and in iteration k it annotates every image
as ``ssd_coco`` with those weights (their SHA-256 checked before they load), under the
source ``student_ssd_i<k>@2``; its boxes are fused with the specialists' like the YOLO
student's.

When iteration k-1 kept nothing a student could learn from (no kept object region; for
Florence-2, no exported line), iteration k is annotated and committed with the
specialists alone, and its ``run.json`` says why under ``student_skipped``.

3. **Commit**: iteration k gets its own ``run.json`` (with the student's training
   summary) and ``_COMMITTED``, and is compacted if it is large (``annotate_corpus``,
   ``run.compact_rows``); earlier iterations are never touched. An interrupted iteration
   resumes like any run: finished shards are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from annotators import annotator_class
from annotators.student_models import student_model_path
from engine.compact import compact_if_due
from engine.corpus import Corpus, CorpusError, atomic_write_bytes, atomic_write_json
from engine.records import file_sha256
from engine.storage import StorePath
from pipelines.annotate import RunSummary, annotate_corpus
from pipelines.config import AnnotatorSpec, EngineConfig
from pipelines.student_errors import NoTrainingLabels


def base_config(corpus: Corpus, given: EngineConfig | None) -> EngineConfig:
    """The config iteration 0 was made with (from its run.json), or the one given."""
    if given is not None:
        return given
    from pipelines.stored import stored_config_tree

    return EngineConfig.model_validate(stored_config_tree(corpus, 0))


def is_specialist(spec: AnnotatorSpec) -> bool:
    cls = annotator_class(spec.name)
    source_name = spec.arguments.get("source_name") or ""
    return cls.stage == "regions" and spec.name not in ("replay", "human_labels") and not source_name.startswith(STUDENT_PREFIX)  # fmt: skip


def specialist_sources(config: EngineConfig) -> list[str]:
    return [spec.build().source for spec in config.annotators if is_specialist(spec)]


STUDENT_PREFIX = "student_"
REGION_TASKS = {"<OD>": "od", "<DENSE_REGION_CAPTION>": "dense_region_caption",
                "<OCR_WITH_REGION>": "ocr_with_region"}  # fmt: skip
CAPTION_TASKS = {"<CAPTION>": "brief", "<DETAILED_CAPTION>": "detailed",
                 "<MORE_DETAILED_CAPTION>": "more_detailed"}  # fmt: skip
CAPTIONERS = ("region_captioner", "hf_captioner")


def is_student(entry: dict) -> bool:
    return (entry.get("source_name") or "").startswith(STUDENT_PREFIX)


def last_index(annotators: list[dict], stage: str) -> int:
    """The index after the last annotator of ``stage`` (or of an earlier stage)."""
    from engine.steps import STAGES

    order = STAGES.index(stage)
    found = [
        i for i, a in enumerate(annotators)
        if STAGES.index(annotator_class(a["name"]).stage) <= order
    ]  # fmt: skip
    return max(found) + 1 if found else 0


def florence2_student_entries(config: EngineConfig, iteration: int, student: Path) -> dict:
    """The Florence-2 student's steps for iteration ``iteration``, by stage: what it was
    trained on (its ``train.json``) decides which tasks it runs."""
    settings = config.refine.student.florence2
    trained = set(json.loads((student.parent / "train.json").read_text())["examples_per_task"])
    common = {
        "model": str(student),
        "source_name": f"student_f2_i{iteration}",
        "max_new_tokens": settings.max_new_tokens,
    }
    entries: dict[str, dict] = {}
    tasks = [task for token, task in REGION_TASKS.items() if token in trained]
    if tasks:
        entries["regions"] = {
            "name": "florence2_regions", **common, "tasks": tasks, "num_beams": settings.num_beams,
        }  # fmt: skip
    granularities = [g for token, g in CAPTION_TASKS.items() if token in trained]
    if granularities and settings.texts != "none":
        entries["texts"] = {
            "name": "hf_captioner", **common, "granularities": granularities,
            "num_beams": settings.num_beams,
        }  # fmt: skip
    own = [f"student_f2_i{iteration}@1"]
    if "<CAPTION_TO_PHRASE_GROUNDING>" in trained and "texts" in entries:
        entries["phrases"] = {"name": "hf_grounder", **common, "text_sources": own}
    if "<REGION_TO_SEGMENTATION>" in trained:  # after the configured segmenter: its own rows
        entries["masks"] = {"name": "florence2_segmenter", **common, "sources": own}
    return entries


def ssd_student_entries(config: EngineConfig, corpus: Corpus, iteration: int, weights: Path) -> dict:  # fmt: skip
    """The SSD student's step: ``ssd_coco`` with the student's weights (the stored copy for
    a corpus on a store) and the digest recorded beside them."""
    settings = config.refine.student.ssd
    summary = json.loads((weights.parent / "student.json").read_text())
    return {
        "regions": {
            "name": "ssd_coco",
            "model_dir": settings.model_dir,
            "weights": student_weights_for_workers(corpus, iteration, weights),
            "sha256": summary["sha256"],
            "labels": summary["trained_classes"] if settings.emit_classes == "trained" else None,
            "source_name": f"student_ssd_i{iteration}",
            "min_score": settings.min_score,
            "input_size": settings.input_size,
            "batch_size": settings.batch_size,
            "device": settings.device,
        }
    }


def iteration_config(
    config: EngineConfig, corpus: Corpus, iteration: int, student: Path | None,
    parent: int | None = None,
) -> EngineConfig:  # fmt: skip
    """Iteration k's config: specialists replayed from ``parent`` (default k-1; or rerun),
    plus the student (none when ``student`` is None: its training was skipped), plus
    people's labels when the iteration has a reviews snapshot (``human_labels``)."""
    tree = config.to_dict()
    refine = config.refine
    parent = iteration - 1 if parent is None else parent
    annotators = []
    replay_added = False
    for spec in config.annotators:
        if is_specialist(spec) and not refine.rerun_specialists:
            if not replay_added:
                annotators.append(
                    {
                        "name": "replay",
                        "corpus": str(corpus.root.resolve()),
                        "iteration": parent,
                        "sources": specialist_sources(config),
                    }
                )
                replay_added = True
            continue
        entry = spec.model_dump(mode="json", exclude_none=True)
        if is_student(entry) or spec.name == "human_labels":
            continue  # an earlier iteration's student or reviews: replaced by this one's
        if (
            student is not None
            and refine.student.kind == "florence2"
            and refine.student.florence2.texts == "replace"
            and spec.name in CAPTIONERS
        ):
            continue  # the student's captions replace the other captioners'
        annotators.append(entry)
    if student is None:
        entries = {}
    elif refine.student.kind == "florence2":
        entries = florence2_student_entries(config, iteration, student)
    elif refine.student.kind == "ssd":
        entries = ssd_student_entries(config, corpus, iteration, student)
    else:
        entries = {
            "regions": {
                "name": "yolo",
                "weights": student_weights_for_workers(corpus, iteration, student),
                "sha256": json.loads((student.parent / "student.json").read_text())["sha256"],
                "source_name": f"student_i{iteration}",
                "min_score": refine.student.min_score,
                "image_size": refine.student.image_size,
                "device": refine.student.device,
            }
        }
    snapshot = reviews_snapshot(corpus, iteration)
    if snapshot.exists():
        annotators.insert(
            last_index(annotators, "regions"),
            {
                "name": "human_labels",
                "reviews": str(snapshot.resolve() if isinstance(snapshot, Path) else snapshot),
                "sha256": hashlib.sha256(snapshot.read_bytes()).hexdigest(),
            },
        )
    for stage in ("regions", "texts", "masks"):
        if stage in entries:
            annotators.insert(last_index(annotators, stage), entries[stage])
    if "phrases" in entries:  # before the other grounders: it grounds its own texts' phrases
        extractors = [i for i, a in enumerate(annotators) if a["name"] == "phrase_extractor"]
        at = extractors[0] + 1 if extractors else last_index(annotators, "phrases")
        annotators.insert(at, entries["phrases"])
    tree["annotators"] = annotators
    tree["run"]["iteration"] = iteration
    fusion = tree["filters"].setdefault("fusion", {})
    fusion["enabled"] = True
    fusion.setdefault("weights", {})["student"] = refine.student_weight
    return EngineConfig.model_validate(tree)


class UntrustedWeights(CorpusError):
    """Student weights this engine did not train here: loading them would unpickle code."""


def trust_store() -> Path:
    """The checksums of the students this machine's engine trained, kept outside every
    corpus (``$FLD_TRUST_STORE``, default ``~/.cache/fld-engine/trusted-weights.json``): a
    corpus folder cannot vouch for its own weights."""
    default = Path.home() / ".cache" / "fld-engine" / "trusted-weights.json"
    return Path(os.environ.get("FLD_TRUST_STORE") or default)


def trust_weights(sha256: str, path: Path) -> None:
    store = trust_store()
    store.parent.mkdir(parents=True, exist_ok=True)
    trusted = json.loads(store.read_text()) if store.exists() else {}
    trusted[sha256] = str(path)
    atomic_write_json(store, trusted)


def check_student_weights(weights: Path, recorded: dict) -> None:
    """``fld refine`` loads a student's ``.pt`` through ultralytics, which unpickles it, so
    it loads only weights whose SHA-256 is the one recorded when the engine trained them
    (``student.json``, copied into the iteration's ``run.json``) and is in this machine's
    trust store. Anything else is refused before it is opened."""
    actual = file_sha256(weights)
    if recorded.get("sha256") != actual:
        raise UntrustedWeights(
            f"{weights}: its SHA-256 ({actual[:16]}...) is not the one recorded when it was "
            "trained; refusing to load it (delete the models/iteration=K folder to retrain)"
        )
    store = trust_store()
    trusted = json.loads(store.read_text()) if store.exists() else {}
    if actual not in trusted:
        raise UntrustedWeights(
            f"{weights}: not trained by this engine on this machine (not in {store}); "
            "refusing to unpickle it (delete the models/iteration=K folder to retrain)"
        )


def validation_map50(metrics) -> float | None:
    """mAP50 of ultralytics' final validation, if training returned its metrics."""
    box = getattr(metrics, "box", None)
    value = getattr(box, "map50", None)
    return None if value is None else round(float(value), 4)


def human_labels_of(corpus: Corpus, iteration: int):
    """The people's labels iteration ``iteration``'s student trains on (its reviews
    snapshot, ``engine.reviews.HumanLabels``), or None when it has none."""
    from engine.reviews import HumanLabels

    snapshot = reviews_snapshot(corpus, iteration)
    return HumanLabels.read(snapshot) if snapshot.exists() else None


def reviews_snapshot(corpus: Corpus, iteration: int):
    """Where iteration ``iteration`` keeps the reviews it started with (``engine.reviews``):
    its human labels, its student's and its judgement all read this copy, so a resumed
    iteration uses the same reviews even if more were imported meanwhile."""
    return corpus.root / "models" / f"iteration={iteration}" / "reviews.parquet"


def snapshot_reviews(corpus: Corpus, iteration: int) -> bool:
    """Copy the corpus's reviews table for ``iteration`` unless it has its copy already;
    True when the iteration has reviews."""
    from engine.reviews import reviews_path

    snapshot = reviews_snapshot(corpus, iteration)
    if snapshot.exists():
        return True
    source = reviews_path(corpus)
    if not source.exists():
        return False
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(snapshot, source.read_bytes())
    return True


def train_florence2_student(
    corpus: Corpus,
    iteration: int,
    config: EngineConfig,
    show_progress: bool = True,
    parent: int | None = None,
) -> Path:
    """Train (or resume, or find trained) the Florence-2 student of ``iteration`` on
    iteration-1's export (people's labels on reviewed images, hold-out images left out:
    ``human_labels_of``); returns its model folder. Its ``student.json`` is the training
    summary. (Its weights are safetensors and load without ``trust_remote_code``: loading
    them runs no code, so they need no trust check.)"""
    from pipelines.florence2_student import ensure_export, train_florence2

    if isinstance(corpus.root, StorePath):
        raise CorpusError(
            f"{corpus.root}: the Florence-2 student trains in the corpus folder and its workers "
            "load it from there; use a local or shared corpus folder for refine.student.kind "
            "florence2 (the YOLO student works with corpora on a store)"
        )
    folder = corpus.root / "models" / f"iteration={iteration}"
    if show_progress and not (folder / "florence2" / "train.json").exists():
        print(f"iteration {iteration}: training the Florence-2 student", file=sys.stderr)
    parent = iteration - 1 if parent is None else parent
    # The training export first, with people's labels on reviewed images (train_florence2
    # finds it made and reuses it).
    (folder / "florence2").mkdir(parents=True, exist_ok=True)
    ensure_export(corpus, parent, folder / "florence2", human_labels_of(corpus, iteration))
    summary = train_florence2(
        corpus, parent, folder / "florence2", config.refine.student.florence2, show_progress
    )
    atomic_write_json(folder / "student.json", {k: v for k, v in summary.items() if k != "losses"})
    return folder / "florence2" / "model"


def train_student(
    corpus: Corpus, iteration: int, config: EngineConfig, show_progress: bool = True,
    parent: int | None = None,
) -> Path:  # fmt: skip
    """Train (or find already trained) the student of ``iteration`` on ``parent``'s
    (default: iteration-1's) kept object regions; returns the path of its weights
    (checked: ``check_student_weights``)."""
    from pipelines.exports import export_corpus

    parent = iteration - 1 if parent is None else parent
    if config.refine.student.kind == "florence2":
        return train_florence2_student(corpus, iteration, config, show_progress, parent)
    if config.refine.student.kind == "ssd":
        if config.refine.student.ssd.train_num_gpus > 0:
            return train_ssd_student_in_ray(corpus, iteration, config, show_progress, parent)
        return train_ssd_student_of(corpus, iteration, config, show_progress, parent)

    folder = models_folder(corpus, iteration)
    weights = folder / "student.pt"
    fetch_stored_student(corpus, iteration, folder)
    if weights.exists():
        summary_path = folder / "student.json"
        recorded = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        check_student_weights(weights, recorded)
        if show_progress:
            print(f"iteration {iteration}: student already trained ({weights})", file=sys.stderr)
        return weights
    student = config.refine.student
    folder.mkdir(parents=True, exist_ok=True)
    data_dir = folder / "data"
    export = export_corpus(
        corpus.root, "yolo", data_dir, iteration=parent, overwrite=True,
        val_fraction=student.val_fraction, include_ocr=False,
        keep_duplicates=config.refine.keep_duplicates, human=human_labels_of(corpus, iteration),
    )  # fmt: skip
    if export["counts"]["boxes"] == 0:
        raise NoTrainingLabels(
            f"iteration {parent} has no kept object regions to train a student on"
        )
    train_dir = folder / "train"
    shutil.rmtree(train_dir, ignore_errors=True)  # a killed training starts over
    from engine.offline import prepare_ultralytics

    prepare_ultralytics()
    from ultralytics import YOLO, settings

    # No experiment-tracker callbacks (ultralytics enables Ray Tune's when ray is installed).
    settings.update(
        {
            key: False
            for key in (
                "raytune",
                "tensorboard",
                "wandb",
                "mlflow",
                "clearml",
                "comet",
                "dvc",
                "hub",
            )
            if key in settings
        }
    )

    if show_progress:
        print(
            f"iteration {iteration}: training the student ({student.model}, {student.epochs} epochs, "
            f"{export['counts']['train']} images, {export['counts']['boxes']} boxes)",
            file=sys.stderr,
        )
    started = time.time()
    model = YOLO(student_model_path(student.model, folder / "model"), task="detect")
    metrics = model.train(
        data=str(data_dir / "data.yaml"), epochs=student.epochs, imgsz=student.image_size,
        batch=student.batch, device=student.device, workers=student.workers, seed=student.seed,
        deterministic=True, project=str(folder), name="train", exist_ok=True, plots=False,
        verbose=show_progress, amp=False,
    )  # fmt: skip
    trained = train_dir / "weights" / "best.pt"
    if not trained.exists():
        trained = train_dir / "weights" / "last.pt"
    temporary = folder / ".student.pt.tmp"
    shutil.copyfile(trained, temporary)
    sha256 = file_sha256(temporary)
    trust_weights(sha256, weights.resolve())
    atomic_write_json(
        folder / "student.json",
        {
            "model": student.model,
            "epochs": student.epochs,
            "image_size": student.image_size,
            "trained_on_iteration": parent,
            "data": export["counts"],
            "train_seconds": round(time.time() - started, 1),
            # Validation on the held-out share of iteration k-1's kept boxes (pseudo-labels).
            "val_map50_pseudo": validation_map50(metrics),
            "sha256": sha256,
        },
    )
    os.replace(temporary, weights)  # last: its presence means the student is complete
    store_student(corpus, iteration, folder)
    return weights


def train_ssd_student_of(
    corpus: Corpus, iteration: int, config: EngineConfig, show_progress: bool = True,
    parent: int | None = None,
) -> Path:  # fmt: skip
    """Train (or resume, or find trained: then its SHA-256 is checked) the SSD student of
    ``iteration`` on ``parent``'s (default: iteration-1's) kept object regions, with
    people's labels in place of the models' on reviewed images and hold-out images left
    out (the iteration's reviews snapshot, ``engine.reviews``); returns its weights' local
    path (for a corpus on a store, in this machine's cache; the weights and their summary
    are also stored in the corpus's ``models/iteration=K``, weights first)."""
    from engine.sources import ByteReader
    from pipelines.ssd_student import WEIGHTS, TrainingData, corpus_examples, train_ssd_student

    parent = iteration - 1 if parent is None else parent
    settings = config.refine.student.ssd
    folder = models_folder(corpus, iteration)
    fetch_stored_student(corpus, iteration, folder, WEIGHTS)
    done = (folder / WEIGHTS).exists()
    if done:
        examples, stats = [], {}
    else:
        examples, stats = corpus_examples(
            corpus,
            parent,
            settings,
            config.refine.keep_duplicates,
            human_labels_of(corpus, iteration),
        )
        if not stats["boxes"]:
            raise NoTrainingLabels(
                f"iteration {parent} kept no object region with a COCO label and a score "
                f"of at least {settings.min_label_score} (refine.student.ssd.min_label_score) "
                "to train the SSD student on"
            )
        if show_progress:
            print(
                f"iteration {iteration}: training the SSD student ({settings.epochs} epochs, "
                f"{stats['images']} images, {stats['boxes']} boxes)",
                file=sys.stderr,
            )
    reader = ByteReader()
    try:
        data = TrainingData(
            examples,
            lambda uri: corpus.load_image(uri, parent, reader),
            {"trained_on_iteration": parent, **stats},
        )
        train_ssd_student(data, folder, settings, show_progress)
    finally:
        reader.close()
    if done and show_progress:
        print(f"iteration {iteration}: student already trained ({folder / WEIGHTS})", file=sys.stderr)  # fmt: skip
    store_student(corpus, iteration, folder, WEIGHTS)
    return folder / WEIGHTS


def ssd_student_task(corpus_root: str, iterations: tuple[int, int], config_tree: dict, show_progress: bool) -> str:  # fmt: skip
    """The body of the Ray task that trains an SSD student (``train_ssd_student_in_ray``):
    in a worker process, on the device Ray assigned it; ``iterations``: the student's
    iteration and its parent. Returns where the weights are on that worker's machine (a
    corpus on a store also holds them: ``store_student``)."""
    from pipelines.config import validate_tree

    config = validate_tree(config_tree)
    iteration, parent = iterations
    return str(train_ssd_student_of(Corpus(corpus_root), iteration, config, show_progress, parent))  # fmt: skip


def train_ssd_student_in_ray(
    corpus: Corpus, iteration: int, config: EngineConfig, show_progress: bool = True,
    parent: int | None = None,
) -> Path:  # fmt: skip
    """The SSD student trained in a Ray task asking for ``refine.student.ssd.train_num_gpus``
    GPUs and ``train_num_cpus`` CPUs, on the cluster at ``run.address`` (a Ray started here
    when there is none, and stopped after). A cluster without that many GPUs is refused
    before anything runs (Ray would wait for them forever). Returns the weights' path on
    this machine: a local corpus's own file (a cluster's workers share its folder), or
    for a corpus on a store, the stored copy fetched into this machine's cache."""
    import ray

    from engine.executors import RayExecutor, check_resources
    from pipelines.ssd_student import WEIGHTS

    settings = config.refine.student.ssd
    run = config.run
    started = RayExecutor(run.workers, run.threads_per_worker, run.address).start_ray()
    try:
        check_resources(
            {"GPU": settings.train_num_gpus, "CPU": settings.train_num_cpus},
            ray.cluster_resources(),
            lambda name: f"refine.student.ssd.train_num_{name.lower()}s",
        )
        task = ray.remote(num_gpus=settings.train_num_gpus, num_cpus=settings.train_num_cpus, max_retries=0)  # fmt: skip
        remote_path = ray.get(
            task(ssd_student_task).remote(
                str(corpus.root),
                (iteration, iteration - 1 if parent is None else parent),
                config.to_dict(),
                show_progress,
            )  # fmt: skip
        )
    finally:
        if started:
            ray.shutdown()
    folder = models_folder(corpus, iteration)
    fetch_stored_student(corpus, iteration, folder, WEIGHTS)
    weights = folder / WEIGHTS
    if not weights.exists():
        raise CorpusError(
            f"the SSD student's training task wrote {remote_path}, which this machine cannot "
            f"read at {weights}: a local corpus trained on a cluster must be on a folder "
            "every node shares (or put the corpus on an object store)"
        )
    return weights


def models_folder(corpus: Corpus, iteration: int) -> Path:
    """Where iteration ``iteration``'s student trains: ``models/iteration=K`` in a local
    corpus; for a corpus on a store, a folder of this machine's cache (ultralytics trains
    on local files), whose ``student.pt`` and ``student.json`` are then copied to the
    corpus's own ``models/iteration=K`` (``store_student``)."""
    if not isinstance(corpus.root, StorePath):
        # Absolute: ultralytics puts a relative ``project`` under its own runs/ folder.
        return corpus.root.resolve() / "models" / f"iteration={iteration}"
    from engine.offline import CACHE_DIR

    # Keyed by the corpus's URI and its iteration 0's plan: a new corpus at an old URI
    # does not meet an old one's leftovers.
    plan = (corpus.iteration_dir(0) / "_plan.json").read_text()
    key = hashlib.sha256(f"{corpus.root}\n{plan}".encode()).hexdigest()[:16]
    return CACHE_DIR / "store-corpora" / key / "models" / f"iteration={iteration}"


def store_student(
    corpus: Corpus, iteration: int, folder: Path, weights_name: str = "student.pt"
) -> None:
    """A corpus on a store keeps its students too: weights first, the summary last (a
    summary on the store means its weights are there). Already stored: left as is."""
    if isinstance(corpus.root, StorePath):
        stored = corpus.root / "models" / f"iteration={iteration}"
        if (stored / "student.json").exists() and (stored / weights_name).exists():
            return
        atomic_write_bytes(stored / weights_name, (folder / weights_name).read_bytes())
        atomic_write_bytes(stored / "student.json", (folder / "student.json").read_bytes())


def fetch_stored_student(
    corpus: Corpus, iteration: int, folder: Path, weights_name: str = "student.pt"
) -> None:
    """A student a run on another machine stored, copied into this machine's cache (it is
    still checked before it is loaded: its SHA-256, and for a pickled one the trust store)."""
    if not isinstance(corpus.root, StorePath) or (folder / weights_name).exists():
        return
    stored = corpus.root / "models" / f"iteration={iteration}"
    if (stored / "student.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / "student.json", (stored / "student.json").read_bytes())
        atomic_write_bytes(folder / weights_name, (stored / weights_name).read_bytes())


def student_weights_for_workers(corpus: Corpus, iteration: int, weights: Path) -> str:
    """The weights path the iteration's workers load: the stored copy for a corpus on a
    store (workers on other machines cannot read this one's cache), else the file."""
    if isinstance(corpus.root, StorePath):
        return str(corpus.root / "models" / f"iteration={iteration}" / weights.name)
    return str(weights)


def refine_corpus(
    corpus_path: str | Path,
    iterations: int,
    config: EngineConfig | None = None,
    show_progress: bool = True,
    accept_worse: bool = False,
) -> list[RunSummary]:
    """Run refinement iterations 1..``iterations`` that are not committed yet. Each builds
    on the corpus's default iteration before it (``Corpus.default_iteration``: the latest
    not judged worse than its parent by people's hold-out reviews), and when the corpus
    has reviews, is judged against them before it commits (``pipelines.review``);
    ``accept_worse`` makes an iteration the default even when it scores below its parent
    (also one committed earlier)."""
    from pipelines.review import accept_iteration, judge_iteration

    corpus = Corpus(corpus_path)
    if not corpus.is_committed(0):
        raise CorpusError(f"{corpus_path} has no committed iteration 0: run `fld run` first")
    config = base_config(corpus, config)
    input_path = json.loads((corpus.iteration_dir(0) / "_plan.json").read_text())["input"]  # fmt: skip
    summaries = []
    for iteration in range(1, iterations + 1):
        if corpus.is_committed(iteration):
            if show_progress:
                print(f"iteration {iteration} is already committed", file=sys.stderr)
            if accept_worse:
                accept_iteration(corpus, iteration, show_progress)
            compact_if_due(corpus, iteration, show_progress)  # one a killed run left unfinished
            continue
        parent = corpus.default_iteration(before=iteration)
        if parent != iteration - 1 and show_progress:
            print(
                f"iteration {iteration}: builds on iteration {parent}, the corpus's default "
                f"(iteration {iteration - 1} scored below its parent on the reviews)",
                file=sys.stderr,
            )
        reviewed = snapshot_reviews(corpus, iteration)
        try:
            student = train_student(corpus, iteration, config, show_progress, parent)
        except NoTrainingLabels as exc:
            if show_progress:
                print(f"iteration {iteration}: no student ({exc})", file=sys.stderr)
            student, notes = None, {"student_skipped": str(exc)}
        if student is not None:
            summary_folder = student.parent.parent if student.is_dir() else student.parent
            notes = {"student": json.loads((summary_folder / "student.json").read_text())}
        notes["parent"] = parent
        iteration_cfg = iteration_config(config, corpus, iteration, student, parent)

        def judge(corpus: Corpus, iteration: int, parent: int = parent) -> dict:
            snapshot = reviews_snapshot(corpus, iteration)
            return judge_iteration(corpus, (iteration, parent), snapshot, accept_worse)

        summaries.append(
            annotate_corpus(
                iteration_cfg,
                input_path,
                str(corpus.root),
                show_progress,
                notes,
                judge if reviewed else None,
            )  # fmt: skip
        )
    return summaries


def corpus_verdict(corpus: Corpus, iteration: int) -> str:
    """One sentence on how people's hold-out reviews judged ``iteration``."""
    judged = corpus.run_info(iteration).get("review_eval") or {}
    if judged.get("f1") is None:
        return f"iteration {iteration}: no hold-out review to judge it by ({judged.get('why', 'none')})"  # fmt: skip

    def number(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    figures = (
        f"F1 {number(judged['f1'])} (mAP50 {number(judged['map50'])}) on {judged['images']} "
        f"reviewed hold-out images, iteration {judged['parent']}: F1 {number(judged['parent_f1'])} "
        f"(mAP50 {number(judged['parent_map50'])})"
    )
    if not judged["worse"]:
        return f"iteration {iteration}: {figures}; it is the corpus's default"
    if judged["default"]:
        return f"iteration {iteration}: {figures}; below its parent, made the default anyway (--accept-worse)"  # fmt: skip
    return (
        f"iteration {iteration}: {figures}; below its parent: committed, but iteration "
        f"{judged['parent']} stays the corpus's default for export, report and the next refine "
        f"(--iteration {iteration} reaches it; fld refine --accept-worse makes it the default)"
    )
