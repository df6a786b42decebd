"""``run.setup: overlapped``: a worker's steps load in a background thread while the first
batches run through the steps already loaded (``engine.steps.StepLoader``,
``ShardProcessor.batch_order``). Each batch still meets the steps in order, every
(batch, step) pair runs once, a step that fails to load stops the run naming it, and the
rows equal those of ``before_work`` (here in process; the demo on Ray in
``tests/integration/test_startup.py``)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import yaml
from PIL import Image

from annotators.chaos import ChaosAnnotator
from engine.executors import WorkerSetupError
from engine.query import connect
from engine.schemas import TABLES
from engine.steps import StepLoader, StepSetupError, WorkerContext
from pipelines.annotate import ShardProcessor, annotate_corpus
from pipelines.config import load_config
from tests.fixtures.common import DEMO_IMAGES


class FakeStep:
    """A step whose ``setup`` waits for ``gate`` (when given) or raises ``error``."""

    source = "fake@1"

    def __init__(self, gate: threading.Event | None = None, error: Exception | None = None):
        self.gate, self.error = gate, error

    def setup(self, worker: WorkerContext) -> None:
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        if self.error is not None:
            raise self.error


def processor_with(steps: list, in_turn: bool = False) -> ShardProcessor:
    processor = ShardProcessor(load_config(None, []))
    processor.steps = steps
    processor.loader = StepLoader(steps, WorkerContext(), in_turn=in_turn)
    return processor


def test_batches_run_the_loaded_steps_while_a_later_one_loads():
    gate = threading.Event()
    processor = processor_with([FakeStep(), FakeStep(gate), FakeStep()])
    n_batches = 5
    order = []
    for pair in processor.batch_order(n_batches, Counter()):
        order.append(pair)
        if len(order) == n_batches:  # every batch through step 0: let step 1 finish
            assert order == [(b, 0) for b in range(n_batches)]
            gate.set()
    assert sorted(order) == [(b, s) for b in range(n_batches) for s in range(3)]  # each once
    for batch in range(n_batches):  # and each batch meets the steps in order
        assert [s for b, s in order if b == batch] == [0, 1, 2]
    assert processor.loader.loaded_at is not None  # known once the last step is


def test_the_loading_thread_is_waited_for_at_exit():
    """A process that ends while a step still loads (a run whose shards held no decodable
    image never waits for one) lets the load finish rather than being finalised under it."""
    gate = threading.Event()
    before = set(threading.enumerate())
    StepLoader([FakeStep(gate)], WorkerContext())
    (loading,) = set(threading.enumerate()) - before
    assert not loading.daemon
    gate.set()
    loading.join(10)
    assert not loading.is_alive()


def test_with_every_step_loaded_batches_go_one_after_another():
    processor = processor_with([FakeStep(), FakeStep()], in_turn=True)
    order = list(processor.batch_order(3, Counter()))
    assert order == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]


def test_a_step_that_fails_to_load_raises_when_a_batch_needs_it():
    processor = processor_with([FakeStep(), FakeStep(error=OSError("weights unreadable"))])
    order = []
    with pytest.raises(StepSetupError, match="could not set up: OSError: weights unreadable"):
        for pair in processor.batch_order(2, Counter()):
            order.append(pair)
    assert order == [(0, 0), (1, 0)]  # what was loaded ran; nothing after the failure
    with pytest.raises(StepSetupError):  # before_work: at once, as setup() always did
        processor_with([FakeStep(error=OSError("weights unreadable"))], in_turn=True)


CONFIG = {
    "annotators": [{"name": "chaos"}, {"name": "rapidocr"}],
    "filters": {"phrase_confidence": {"enabled": False}},
    "run": {"executor": "local", "shard_size": 3, "batch_size": 1},
}


@pytest.fixture
def images(tmp_path):
    """Three demo photos with text (the OCR finds lines) and a blank one."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("bus.jpg", "sign.png", "coffee.jpg"):
        (folder / name).write_bytes((DEMO_IMAGES / name).read_bytes())
    Image.new("RGB", (160, 60), (250, 250, 250)).save(folder / "blank.png")
    return folder


def run(tmp_path, images, setup: str):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    config = load_config(path, [f"run.setup={setup}"])
    out = tmp_path / setup
    annotate_corpus(config, str(images), str(out), show_progress=False)
    return out


@pytest.mark.parametrize("setup", ["overlapped", "before_work"])
def test_a_failed_load_stops_a_local_run_naming_the_step(tmp_path, images, monkeypatch, setup):
    def broken(self, worker):
        raise RuntimeError("no weights here")

    monkeypatch.setattr(ChaosAnnotator, "setup", broken)
    with pytest.raises(WorkerSetupError, match=r"step chaos@1 could not set up: .*no weights here"):  # fmt: skip
        run(tmp_path, images, setup)


def test_overlapped_and_before_work_write_the_same_rows(tmp_path, images):
    outs = [run(tmp_path, images, setup) for setup in ("overlapped", "before_work")]
    for table in TABLES:
        rows = [connect(out).execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for out in outs]  # fmt: skip
        assert rows[0] == rows[1], table
    counts = connect(outs[0]).execute("SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM regions WHERE source = 'rapidocr@1')").fetchone()  # fmt: skip
    assert counts[0] == 4 and counts[1] > 0  # the comparison is of something
