"""The run configuration: one YAML file, validated with pydantic before Ray starts or any
model loads. Unknown keys are errors; every error names its key (``filters.nms.iou_threshold``).

Sections (see ``pipelines/default_config.yaml`` for every default, documented):

- ``decode``: ``min_side``, ``max_pixels``  (``engine.imaging.DecodeLimits``)
- ``input``: ``parquet_column``, ``download`` (``engine.sources``, ``engine.http``)
- ``run``: ``shard_size``, ``batch_size``, ``workers``, ``threads_per_worker``,
  ``executor`` (``auto`` | ``ray`` | ``local``; ``local_max_images``), ``address``, ``iteration``, ``compact_rows``,
  ``task_timeout_s``, ``max_attempts``, ``max_failed_shards``
- ``annotators``: a list; each item ``{name: <registry name>, ...its arguments}``
- ``filters``: ``geometry``, ``confidence``, ``nms``, ``fusion``, ``text_complexity``,
  ``phrase_confidence``, each ``{enabled: bool, ...its arguments}``
- ``refine``: the refinement loop's ``student`` (model, epochs, image_size, ...),
  ``rerun_specialists``, ``student_weight``

Command-line overrides use dotted keys: ``--set filters.nms.iou_threshold=0.6``,
``--set annotators.0.min_score=0.1`` (values are parsed as YAML).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from annotators import REGISTRY as ANNOTATORS
from annotators import annotator_class
from annotators.student_models import (
    MOBILENET_STUDENT,
    check_builtin_student,
    is_builtin_student,
)
from engine.compact import DEFAULT_TARGET_ROWS
from engine.steps import Resources
from filters import REGISTRY as FILTERS
from filters import filter_class

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")


class ConfigError(Exception):
    """A bad configuration; the message names the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecodeConfig(Strict):
    min_side: Annotated[int, Field(ge=1)] = 16
    max_pixels: Annotated[int, Field(ge=1)] = 89_478_485


class DownloadConfig(Strict):
    """How workers fetch http(s) URLs (``engine.http.DownloadPolicy``)."""

    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    retries: Annotated[int, Field(ge=0, le=20)] = 2
    max_bytes: Annotated[int, Field(ge=1)] = 64 * 2**20


class InputConfig(Strict):
    """``allow_paths_outside``: a path or Parquet list may name files outside the list's own
    folder (off by default: a list from someone else could name ``/etc/passwd``)."""

    parquet_column: str | None = None
    download: DownloadConfig = DownloadConfig()
    allow_paths_outside: bool = False


class RunConfig(Strict):
    shard_size: Annotated[int, Field(ge=1)] = 64
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    workers: Annotated[int, Field(ge=1, le=1024)] = 2
    threads_per_worker: Annotated[int, Field(ge=1, le=256)] = 1
    # auto: in this process when there is no ``address``, at most ``local_max_images``
    # inputs and no annotator with its own resources (Ray starts in seconds; a few images
    # take less); else Ray.
    executor: Literal["auto", "ray", "local"] = "auto"
    local_max_images: Annotated[int, Field(ge=0)] = 16
    # A Ray worker that has done this many shards is replaced by a fresh process once its
    # last shard is in (a bound on memory a model may leak); 0: never. In-process: unused.
    worker_max_shards: Annotated[int, Field(ge=0)] = 0
    address: str | None = None
    iteration: Annotated[int, Field(ge=0)] = 0
    # After the commit, merge the iteration's per-shard files into parts of about this many
    # rows of its largest table, if it has more (engine/compact.py); 0: never.
    compact_rows: Annotated[int, Field(ge=0)] = DEFAULT_TARGET_ROWS
    # A model call on one batch that runs longer is killed (its worker process exits) and the
    # image becomes a ``timeout`` errors row (engine.executors; the Ray executor); 0: no limit.
    task_timeout_s: Annotated[float, Field(ge=0)] = 1800.0
    # Tries of a shard (and of an isolated image) whose worker process dies before it is
    # split, or the image written off as ``worker_crashed``.
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 2
    # Shards that may end failed (an error that is not a crashed worker) before the run stops;
    # failed shards are listed, the iteration is not committed, and a rerun retries them.
    max_failed_shards: Annotated[int, Field(ge=0)] = 0
    # Exact copies (the same decoded pixels, ``engine.dedup``): ``after_annotation`` annotates
    # every image and groups the copies when the iteration commits (the ``duplicates``
    # table); ``before_annotation`` also skips the models for an image whose pixels an
    # image of a shard already written (or earlier in its own shard) has, and copies that
    # image's rows, recorded in ``images.labels_from``.
    dedup: Literal["after_annotation", "before_annotation"] = "after_annotation"
    # How a worker loads its steps' models: ``before_work``, all of them before the first
    # batch; ``overlapped``, in a background thread, in step order, while the first batches
    # run through the steps already loaded (engine.steps.StepLoader). The rows are the same
    # either way. Not the default: on 2 CPU cores the whole run took as long (loading is
    # mostly imports, which hold the GIL; bench/results/setup_overlap.json).
    setup: Literal["before_work", "overlapped"] = "before_work"


class AnnotatorSpec(Strict):
    """``name`` picks the annotator; ``resources`` (``engine.steps.Resources``) and
    ``replicas`` say how it is placed; every other key is one of its constructor arguments.

    An annotator whose resources ask for a GPU (``num_gpus > 0``), or that sets
    ``replicas``, runs in its own pool of ``replicas`` Ray actors, each holding those
    resources, apart from the CPU workers (``run.workers``) that read, decode, filter and
    write; the CPU workers send it batches. Otherwise it runs inside each CPU worker."""

    model_config = ConfigDict(extra="allow")
    name: str
    resources: Resources | None = None  # None: the annotator's own declaration
    replicas: Annotated[int, Field(ge=1, le=1024)] | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in ANNOTATORS:
            raise ValueError(f"unknown annotator {name!r}; known: {sorted(ANNOTATORS)}")
        return name

    @model_validator(mode="after")
    def _arguments_valid(self) -> AnnotatorSpec:
        annotator_class(self.name)(**self.arguments)  # validates; loads no model
        return self

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def placement(self) -> Resources:
        """The resources one instance gets: the config's, else the class's declaration."""
        if self.resources is not None:
            return self.resources
        return Resources(**annotator_class(self.name).resources)

    @property
    def pooled(self) -> bool:
        """Whether it runs in a pool of its own actors (see the class docstring)."""
        return self.replicas is not None or self.placement().num_gpus > 0

    def build(self):
        return annotator_class(self.name)(**self.arguments)


class FilterSpec(Strict):
    """``enabled`` turns the filter on or off; every other key is one of its constructor
    arguments."""

    model_config = ConfigDict(extra="allow")
    enabled: bool = True

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class FiltersBase(Strict):
    """One ``FilterSpec`` field per entry of ``filters.REGISTRY`` (the registry drives the
    config: a new filter is its file, a registry line and its tests)."""

    @field_validator("*")
    @classmethod
    def _arguments_valid(cls, spec: FilterSpec, info: ValidationInfo) -> FilterSpec:
        filter_class(info.field_name)(**spec.arguments)  # validates; loads nothing
        return spec

    def build(self) -> list:
        """The enabled filters, in registry order."""
        return [
            filter_class(key)(**spec.arguments)
            for key in FILTERS
            if (spec := getattr(self, key)).enabled
        ]


FiltersConfig = create_model(
    "FiltersConfig",
    __base__=FiltersBase,
    **{key: (FilterSpec, FilterSpec()) for key in FILTERS},
)


def build_steps(config: EngineConfig) -> list:
    """Every step of a run, annotators then filters, each in config order (the processor
    orders them by stage: ``engine.steps.order_steps``)."""
    return [spec.build() for spec in config.annotators] + config.filters.build()


FLORENCE2_TASKS = (
    "<CAPTION>",
    "<DETAILED_CAPTION>",
    "<MORE_DETAILED_CAPTION>",
    "<OD>",
    "<DENSE_REGION_CAPTION>",
    "<REGION_PROPOSAL>",
    "<OCR>",
    "<OCR_WITH_REGION>",
    "<CAPTION_TO_PHRASE_GROUNDING>",
    "<REFERRING_EXPRESSION_SEGMENTATION>",
    "<REGION_TO_SEGMENTATION>",
)  # fmt: skip  (the florence2 export's tasks: pipelines/exports/florence2.py)


class Florence2StudentConfig(Strict):
    """The Florence-2 student (``refine.student.kind: florence2``, and ``fld train``):
    a transformers ``Florence2ForConditionalGeneration`` fine-tuned on an iteration's
    ``florence2`` export (``pipelines/florence2_student.py``).

    - ``model``: hub id (``florence-community/Florence-2-base``, from the local hub cache)
      or local folder of a native transformers Florence-2; checked when read.
    - ``epochs``, ``batch`` (examples per forward pass), ``accumulate`` (passes per
      optimizer step), ``learning_rate``, ``weight_decay``, ``warmup_steps`` (linear warm-up,
      then linear decay to 0), ``max_target_tokens`` (longer targets are cut).
    - ``task_weights``: per task token, how often its lines are used per epoch (0: never,
      0.5: half of them, 2: each twice); tasks not named weigh 1.
    - ``val_fraction``: images whose ``image_id`` hash falls under it are held out
      (validation loss), the same images whatever the run.
    - ``seed``; ``device`` (``auto``: CUDA if torch sees it); ``mixed_precision``
      (bfloat16 autocast on CUDA; ignored on the CPU); ``checkpoint_every`` optimizer
      steps (a killed training resumes from the last one); ``shuffle_buffer`` lines.
    - ``texts``: how the trained student's captions join the specialists' in the next
      iteration: ``add`` (both written, both judged by the text filter), ``replace`` (the
      other captioners are left out of the iteration), ``none`` (no student captions).
    - ``max_new_tokens``, ``num_beams``: the student's generation when it annotates.
    """

    model: str = "florence-community/Florence-2-base"
    epochs: Annotated[int, Field(ge=1, le=1000)] = 3
    batch: Annotated[int, Field(ge=1, le=1024)] = 8
    accumulate: Annotated[int, Field(ge=1, le=1024)] = 1
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-5
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    max_target_tokens: Annotated[int, Field(ge=8, le=4096)] = 512
    task_weights: dict[str, Annotated[float, Field(ge=0.0, le=100.0)]] = Field(default_factory=dict)
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True
    checkpoint_every: Annotated[int, Field(ge=1)] = 200
    shuffle_buffer: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    texts: Literal["add", "replace", "none"] = "add"
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 256
    num_beams: Annotated[int, Field(ge=1, le=64)] = 1

    @field_validator("model")
    @classmethod
    def _florence2_model(cls, model: str) -> str:
        from annotators.base import model_folder_of_type

        return model_folder_of_type(model, ("florence2",))

    @field_validator("task_weights")
    @classmethod
    def _known_tasks(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(FLORENCE2_TASKS))
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; known: {list(FLORENCE2_TASKS)}")
        return weights


def installed_ssd_dir() -> str:
    from annotators.ssd_coco import default_model_dir

    return default_model_dir()


class SsdStudentConfig(Strict):
    """The SSD student (``refine.student.kind: ssd``): a copy of the ``ssd_coco``
    specialist fine-tuned on the previous iteration's kept object regions
    (``pipelines/ssd_student.py``; the recipe and why: ``docs/refinement.md``).

    - ``model_dir``: the teacher, a folder holding the SSD graph (``ssd_coco``'s
      ``model_dir``; default: the installed package's).
    - Labels: kept object regions of at least ``min_label_score`` with a COCO label are
      learned; other object regions of at least ``ignore_score`` are ignored (their anchors
      are neither positive nor negative); ``ignore_score`` above ``min_label_score``: none.
      A class with fewer than ``min_class_labels`` labels in the whole iteration is not
      learned: its boxes are ignore boxes.
    - Optimisation: ``epochs``, ``batch`` (images per step), ``learning_rate`` (SGD,
      momentum 0.9), ``warmup_steps`` (linear warm-up, then cosine to 0), ``weight_decay``,
      ``frozen_blocks`` (the stem and the first N of MobileNetV2's 17 blocks are not
      trained; batch norm never is), ``heads_only`` (only the box predictors are trained),
      ``negatives_per_positive`` (hard-negative mining).
    - Against forgetting COCO: ``mask_unlabelled_classes`` (the classification loss covers
      the background and the labelled classes only), ``l2sp_weight`` (L2 pull toward the
      teacher's weights), ``distill_weight`` (the unlabelled classes' probabilities pulled
      toward the teacher's on the same batch; costs a teacher forward pass per step).
    - Augmentation (``pipelines/ssd_augment.py``): ``colour_jitter``,
      ``zoom_out_probability`` and ``zoom_out_max``, ``crop_probability``,
      ``flip_probability``; ``input_size`` the network's input side, as ``ssd_coco``'s.
    - ``seed``; ``threads`` (torch CPU threads; 0: torch's default); ``checkpoint_every``
      optimizer steps (a killed training resumes from the last checkpoint).
    - Annotating: ``min_score`` (the student's detections under it are not emitted),
      ``emit_classes`` (``trained``: only the classes it learned, whose other outputs are
      the teacher's own, already in the ensemble; ``all``: every COCO class),
      ``batch_size``, ``device`` (``auto``: the worker's GPU if it has one, else the CPU).
    - Where it trains: ``train_num_gpus`` 0 (default) trains in the ``fld refine`` process;
      above 0 the training is a Ray task asking for that many GPUs (and ``train_num_cpus``
      CPUs) on the cluster at ``run.address``, or on a Ray started here; ``train_device``
      (``auto``: the GPU Ray gave the task when torch sees it, else the CPU).
    """

    model_dir: str = Field(default_factory=installed_ssd_dir)
    min_label_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    ignore_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    min_class_labels: Annotated[int, Field(ge=1)] = 1
    epochs: Annotated[int, Field(ge=1, le=1000)] = 12
    batch: Annotated[int, Field(ge=1, le=1024)] = 8
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3
    warmup_steps: Annotated[int, Field(ge=0)] = 10
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 4e-5
    frozen_blocks: Annotated[int, Field(ge=0, le=17)] = 13
    heads_only: bool = False
    negatives_per_positive: Annotated[float, Field(gt=0.0, le=100.0)] = 3.0
    mask_unlabelled_classes: bool = True
    l2sp_weight: Annotated[float, Field(ge=0.0)] = 0.0
    distill_weight: Annotated[float, Field(ge=0.0)] = 0.0
    colour_jitter: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    zoom_out_probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    zoom_out_max: Annotated[float, Field(ge=1.0, le=10.0)] = 3.0
    crop_probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    flip_probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    input_size: Annotated[int, Field(ge=32, le=2048)] = 300
    seed: int = 0
    threads: Annotated[int, Field(ge=0, le=256)] = 0
    checkpoint_every: Annotated[int, Field(ge=1)] = 50
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    emit_classes: Literal["trained", "all"] = "all"
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    device: str = "auto"
    train_num_gpus: Annotated[float, Field(ge=0.0, le=64.0)] = 0.0
    train_num_cpus: Annotated[float, Field(gt=0.0, le=256.0)] = 1.0
    train_device: str = "auto"

    @field_validator("train_device")
    @classmethod
    def _torch_device(cls, device: str) -> str:
        if device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
            raise ValueError(f"{device!r}: expected auto, cpu, cuda, cuda:N or mps")
        return device

    @field_validator("model_dir")
    @classmethod
    def _teacher_exists(cls, model_dir: str) -> str:
        from annotators.ssd_coco import SSDCocoDetector

        return SSDCocoDetector._model_files_exist(model_dir)


class StudentConfig(Strict):
    """The refinement loop's student. ``kind: ssd`` (default): the ``ssd_coco`` specialist
    fine-tuned on the previous iteration's kept object regions (``SsdStudentConfig``, under
    ``ssd``; the default since it raised mAP50 on the refined corpus without forgetting COCO
    elsewhere: ``docs/refinement.md``). ``kind: yolo``: an ultralytics YOLO trained
    on the kept object regions of the previous iteration; ``model``: the built-in
    pretrained student (``annotators.student_models.MOBILENET_STUDENT``: ImageNet
    MobileNetV2 backbone), a model YAML (trained from scratch), or a ``.pt`` to fine-tune.
    ``kind: florence2``: the multitask student of ``florence2`` (``Florence2StudentConfig``),
    trained on every task of the previous iteration's Florence-2 export. The keys after
    ``ssd`` and ``florence2`` (``model``, ``epochs``, ...) are the YOLO student's."""

    kind: Literal["ssd", "yolo", "florence2"] = "ssd"
    florence2: Florence2StudentConfig = Florence2StudentConfig()
    ssd: SsdStudentConfig = SsdStudentConfig()
    model: str = MOBILENET_STUDENT
    epochs: Annotated[int, Field(ge=1, le=10_000)] = 30
    image_size: Annotated[int, Field(ge=32, le=4096, multiple_of=32)] = 320
    batch: Annotated[int, Field(ge=1, le=1024)] = 16
    device: str = "cpu"
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    seed: int = 0
    workers: Annotated[int, Field(ge=0, le=64)] = 0  # dataloader processes (0: deterministic)

    @field_validator("model")
    @classmethod
    def _model_exists(cls, model: str) -> str:
        if is_builtin_student(model):
            return check_builtin_student(model)
        from annotators.yolo import YoloDetector

        return YoloDetector._weights_exist(model)


class RefineConfig(Strict):
    student: StudentConfig = StudentConfig()
    rerun_specialists: bool = False  # run the specialists again instead of replaying their rows
    student_weight: Annotated[float, Field(gt=0.0)] = 1.0  # the student's weight in fusion
    # Train on the copies in duplicate groups too (default: their representatives only).
    keep_duplicates: bool = False


class DedupConfig(Strict):
    """Duplicate images (``engine/dedup.py``), grouped when an iteration commits into its
    ``duplicates`` table: ``enabled``; ``max_distance`` (perceptual-hash bits, of 64, two
    near-duplicates may differ by); ``exact_limit`` (up to this many hashed images the
    near pairs are found exactly, by multi-index hashing; above, by ``tables`` keys of
    sampled bits, which may miss a pair: the iteration's ``run.json`` says how likely);
    ``crop_hashes`` (compare an image's own hash with the others' crop hashes too, which
    finds copies trimmed at the centre or on two edges; off, grouping 10M images is about
    4x faster and finds only copies of the whole image: ``bench/dedup.py``)."""

    enabled: bool = True
    max_distance: Annotated[int, Field(ge=0, le=16)] = 6
    exact_limit: Annotated[int, Field(ge=0)] = 100_000
    tables: Annotated[int, Field(ge=1, le=256)] = 16
    crop_hashes: bool = True


class EngineConfig(Strict):
    decode: DecodeConfig = DecodeConfig()
    input: InputConfig = InputConfig()
    run: RunConfig = RunConfig()
    annotators: list[AnnotatorSpec] = Field(min_length=1)
    filters: FiltersConfig = FiltersConfig()
    refine: RefineConfig = RefineConfig()
    dedup: DedupConfig = DedupConfig()

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"] if part not in ("function-after",))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key or '<top level>'}: {message}")
    return "invalid config:\n  " + "\n  ".join(lines)


def parse_override(override: str) -> tuple[list[str], Any]:
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. run.workers=4")
    key, raw_value = override.split("=", 1)
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError:
        value = raw_value
    return key.strip().split("."), value


def apply_override(tree: dict, path: list[str], value: Any) -> None:
    node: Any = tree
    for depth, part in enumerate(path[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"--set {'.'.join(path)}: no list item {part!r} at {'.'.join(path[:depth]) or 'top'}"
                )
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
            if node is None:
                node = {}
    last = path[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {'.'.join(path)}: no list item {last!r}")
        node[int(last)] = value
    else:
        node[last] = value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> EngineConfig:
    """Read a YAML config (the default offline ensemble when ``path`` is None), apply
    ``KEY=VALUE`` overrides and validate. Raises ``ConfigError`` naming the bad key."""
    config_path = Path(path) if path else DEFAULT_CONFIG_PATH
    try:
        tree = yaml.safe_load(config_path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config: {config_path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {config_path} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"--config: {config_path} must hold a mapping of sections")
    return validate_tree(tree, overrides)


def validate_tree(tree: dict, overrides: list[str] = ()) -> EngineConfig:
    """A config tree (a file's, or a run.json's) with ``KEY=VALUE`` overrides applied,
    validated; raises ``ConfigError`` naming the bad key."""
    for override in overrides:
        apply_override(tree, *parse_override(override))
    try:
        return EngineConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
