"""SSD-MobileNet-v2 speed: the engine's torch port (``ssd_coco@2``) against OpenCV's ``cv2.dnn``
running the same frozen graph (``ssd_coco@1``'s code path), milliseconds per image.

The work: ``N_IMAGES`` images (the demo photos, then ``engine.scenes`` scenes, seed
``SCENE_SEED``, 640x480), decoded before the clock starts, models loaded before it too.
One pass is every image through one arm, in batches of 1 or 8 images per forward
(the resize to 300x300 and the detection selection are inside the pass, as in the
annotator). Both libraries get ``THREADS`` threads (``torch.set_num_threads``,
``cv2.setNumThreads``). Each arm runs one unmeasured pass first; then ``repeats`` rounds
(default 5), the arms alternating which runs first; medians of the passes' ms/image, and
the torch / OpenCV ratio of each round (median, spread). Where OpenCV has no
``readNetFromTensorflow`` (5.1 and later), the torch arm runs alone and the result says so.
To measure both arms with the locked OpenCV 5.1, put OpenCV 5.0 in a side folder first:
``pip install --no-deps --target /tmp/cv50 opencv-python-headless==5.0.0.93`` and run
with ``PYTHONPATH=/tmp/cv50``.

    .venv/bin/python bench/ssd_speed.py            # bench/results/ssd_speed.json
    .venv/bin/python bench/ssd_speed.py --quick    # 2 repeats, history only
    .venv/bin/python bench/run.py --only ssd_speed
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for path in (str(REPO), str(REPO / "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

from results_store import new_run_id, save_result  # noqa: E402

N_IMAGES = 16
SCENE_SEED = 5
THREADS = 2
BATCH_SIZES = (1, 8)
INPUT_SIZE = 300


def bench_images(n_images: int) -> list[np.ndarray]:
    """The demo photos, then generated scenes, as decoded RGB arrays (``n_images`` in all)."""
    from engine.imaging import decode_image
    from engine.scenes import generate_scenes

    demo = sorted(p for p in (REPO / "demo" / "images").iterdir() if p.is_file())[:n_images]
    images = [decode_image(p.read_bytes()).pixels for p in demo]
    if len(images) < n_images:
        with tempfile.TemporaryDirectory() as folder:
            generate_scenes(folder, n_images - len(images), seed=SCENE_SEED)
            for p in sorted((Path(folder) / "images").glob("*.jpg")):
                images.append(decode_image(p.read_bytes()).pixels)
    return images


class TorchArm:
    """``ssd_coco@2`` on the CPU: ``SSDCocoDetector.annotate`` at a given batch size."""

    name = "torch"

    def __init__(self):
        from annotators.ssd_coco import SSDCocoDetector
        from engine.steps import WorkerContext

        self.detector = SSDCocoDetector(device="cpu")
        self.detector.setup(WorkerContext(threads=THREADS, device="cpu"))

    def run(self, images: list[np.ndarray], batch_size: int) -> int:
        self.detector.batch_size = batch_size
        return sum(map(len, self.detector.annotate(images)))


class OpenCVArm:
    """``ssd_coco@1``'s code path: ``blobFromImages`` of a batch, ``forward``, the rows of
    score >= 0.05 made into ``Region`` objects in pixels, as its ``annotate`` did."""

    name = "opencv"

    def __init__(self):
        import cv2

        from annotators.ssd_coco import GRAPH_CONFIG, GRAPH_FILE, default_model_dir

        cv2.setNumThreads(THREADS)
        folder = Path(default_model_dir())
        self.net = cv2.dnn.readNetFromTensorflow(str(folder / GRAPH_FILE), str(folder / GRAPH_CONFIG))  # fmt: skip

    def run(self, images: list[np.ndarray], batch_size: int) -> int:
        import cv2

        from engine.labels import COCO_LABELS
        from engine.records import Region

        regions = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            blob = cv2.dnn.blobFromImages(batch, size=(INPUT_SIZE, INPUT_SIZE), swapRB=False)
            self.net.setInput(blob)
            for batch_index, class_id, score, x0, y0, x1, y1 in self.net.forward().reshape(-1, 7):
                label = COCO_LABELS.get(int(class_id))
                if score < 0.05 or label is None:
                    continue
                height, width = batch[int(batch_index)].shape[:2]
                box = (float(x0) * width, float(y0) * height, float(x1) * width, float(y1) * height)  # fmt: skip
                regions.append(Region("object", *box, label, float(score), "ssd_coco@1"))
        return len(regions)


def opencv_available() -> bool:
    import cv2

    return hasattr(cv2.dnn, "readNetFromTensorflow")


def timed_pass(arm, images: list[np.ndarray], batch_size: int) -> dict:
    began = time.perf_counter()
    detections = arm.run(images, batch_size)
    seconds = time.perf_counter() - began
    return {"ms_per_image": round(1000 * seconds / len(images), 3), "detections": detections}


def run(repeats: int = 5, n_images: int = N_IMAGES) -> dict:
    """Both arms (or the torch arm alone, see the module docstring); returns ``headlines``
    (``(measure, value, per_repeat)``: ratios torch / OpenCV, or torch's ms/image when it
    runs alone), ``notes`` and ``measurements`` (``passes[arm][batch]``: every measured
    pass, ``median_ms_per_image[arm][batch]``)."""
    import torch

    torch.set_num_threads(THREADS)
    images = bench_images(n_images)
    arms = [TorchArm()]
    if opencv_available():
        arms.append(OpenCVArm())
    passes: dict[str, dict[str, list[dict]]] = {a.name: {str(b): [] for b in BATCH_SIZES} for a in arms}  # fmt: skip
    for batch_size in BATCH_SIZES:
        for arm in arms:
            arm.run(images, batch_size)  # warm-up: first-call allocations, thread pools
        for repeat in range(repeats):
            order = arms if repeat % 2 == 0 else arms[::-1]
            for arm in order:
                passes[arm.name][str(batch_size)].append(timed_pass(arm, images, batch_size))
    medians = {
        arm: {b: statistics.median(p["ms_per_image"] for p in runs) for b, runs in by_batch.items()}
        for arm, by_batch in passes.items()
    }
    headlines, notes = [], []
    for b in map(str, BATCH_SIZES):
        torch_ms = [p["ms_per_image"] for p in passes["torch"][b]]
        if "opencv" in passes:
            ratios = [t / o["ms_per_image"] for t, o in zip(torch_ms, passes["opencv"][b], strict=True)]  # fmt: skip
            headlines.append((f"batch {b}: torch / OpenCV ms per image", statistics.median(ratios), ratios))  # fmt: skip
        else:
            headlines.append((f"batch {b}: torch ms per image (OpenCV arm not run)", medians["torch"][b], torch_ms))  # fmt: skip
    import cv2

    if "opencv" not in passes:
        notes.append(f"ssd_speed: OpenCV {cv2.__version__} has no readNetFromTensorflow: torch arm only")  # fmt: skip
    summary = ", ".join(
        f"batch {b}: " + " / ".join(f"{arm} {medians[arm][b]:.1f}" for arm in medians)
        for b in map(str, BATCH_SIZES)
    )
    notes.append(f"ssd_speed: median ms per image on {THREADS} threads ({summary})")
    return {
        "headlines": headlines,
        "notes": notes,
        "measurements": {
            "what": __doc__.split("\n\n")[1].strip(),
            "images": len(images),
            "threads": THREADS,
            "repeats": repeats,
            "opencv": cv2.__version__,
            "torch": torch.__version__,
            "arms": list(passes),
            "median_ms_per_image": medians,
            "passes": passes,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats, history only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=N_IMAGES)
    args = parser.parse_args(argv)
    import machine

    run_id = new_run_id()
    began = time.perf_counter()
    described = machine.describe_machine()
    result = run(2 if args.quick else args.repeats, args.images)
    headlines = [
        {
            "measure": measure,
            "ratio": round(value, 4),
            "target": None,
            "met": None,
            "repeats": len(per_repeat),
            "spread": [round(min(per_repeat), 4), round(max(per_repeat), 4)],
        }
        for measure, value, per_repeat in result["headlines"]
    ]
    payload = {
        **result,
        "headlines": headlines,
        "benchmark": "ssd_speed",
        "machine": described,
        "bench_seconds": round(time.perf_counter() - began, 1),
    }
    kept = save_result("ssd_speed", payload, run_id, latest=not args.quick)
    print(json.dumps(headlines, indent=2))
    print("\n".join(result["notes"]))
    print(f"kept: {kept}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
