"""Duplicate detection, measured (issue 26): does it find the copies, does it leave distinct
images alone, what does hashing cost, and does the grouping scale?

    .venv/bin/python bench/dedup.py                       # all parts, 10M synthetic images
    .venv/bin/python bench/dedup.py --hashes 1000000      # a smaller scale part
    PYTHONPATH=/tmp/ih .venv/bin/python bench/dedup.py    # also against imagehash (below)

1. **Accuracy**: the demo photos and 40 generated scenes (``engine.scenes``: many share a
   background photo and objects, so they are near-identical *different* images, the
   negatives that matter) are the originals; each demo photo and every fourth scene gets
   planted copies: re-encoded as JPEG at quality 30, 60 and 95, resized to 0.5x and 2x,
   cropped by 3, 5, 7 and 10 % around the centre (of each side's length in all) and by
   3, 5, 7 and 10 % off two edges, each corner in turn (``corner7tl`` keeps the top left
   93 % of each side; 5 and 10 % are the crop hashes' own boxes, 3 and 7 % fall between
   them), a small text overlay, and a horizontal flip. The grouping runs as the engine
   runs it (``engine.dedup``: the hashes of decoded pixels, then ``find_duplicates`` in
   DuckDB), once per edit over the originals and that edit's copies: with every copy in
   one run, a copy the hashes miss would still join its photo's group through a sibling
   copy, so that run (also reported, ``all_copies_at_once``) says little of each edit. A
   pair is *true* when both images come from one original; a *found* pair is two images
   in one group. Precision over all pairs found by the per-edit runs; recall per edit
   (original - copy pairs). Flips are not counted as copies to find (a DCT hash of a
   mirrored image is another hash; finding them needs the flipped image's hash too), but
   are reported.
2. **Hashing cost**: ms per image of ``image_hashes`` (OpenCV DCT) on the decoded demo
   photos, against ``imagehash.phash`` on the same pixels where ``imagehash`` can be
   imported (not a dependency: ``pip install --target /tmp/ih imagehash PyWavelets`` and
   ``PYTHONPATH=/tmp/ih``), with the bits they agree on; and the share of a default-config
   ``fld run`` of the demo photos (in-process) that hashing took, from the shard markers'
   stage seconds.
3. **Scale**: ``--hashes`` synthetic images' hashes (uniform random 64-bit values, plus 1 %
   planted copies 1-4 bits from an original), each image with its ten crop hashes too
   (random; 11 hashes an image, as the engine stores them), written to a Parquet file, then
   grouped twice, as the engine groups by default and with ``dedup.crop_hashes: false``
   (the own hashes alone: the issue's "10M hashes"), each in a fresh
   process that reads the file, with DuckDB's memory limit at 700 MB (it spills to disk
   beyond): wall seconds and the process's peak resident memory; and the planted copies
   found.

Writes ``bench/results/dedup.json`` (and its history copy). Goals: precision >= 0.99,
recall >= 0.95 on the edits that keep the image, hashing <= 1 % of the pipeline's wall
time, grouping 10M hashes in < 60 s with < 1 GB of memory.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import subprocess
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

DEMO = REPO / "demo" / "images"
EDITS = (
    "jpeg30",
    "jpeg60",
    "jpeg95",
    "half",
    "double",
    "crop3",
    "crop5",
    "crop7",
    "crop10",
    *(f"corner{cut}{corner}" for cut in (3, 5, 7, 10) for corner in ("tl", "tr", "bl", "br")),
    "text",
    "flip",
)
COUNTED = tuple(edit for edit in EDITS if edit != "flip")
SCENES = 40


def edited(image, edit: str):
    """The copy of a PIL image that ``edit`` names, as decoded pixels."""
    from PIL import ImageDraw

    from engine.imaging import decode_image

    width, height = image.size
    if edit.startswith("jpeg"):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(edit[4:]))
        return decode_image(buffer.getvalue()).pixels
    if edit == "half":
        out = image.resize((width // 2, height // 2))
    elif edit == "double":
        out = image.resize((width * 2, height * 2))
    elif edit.startswith("crop"):  # around the centre
        cut = int(edit[4:]) / 200  # of each side, so the edit's share in all
        out = image.crop((int(width * cut), int(height * cut), int(width * (1 - cut)), int(height * (1 - cut))))  # fmt: skip
    elif edit.startswith("corner"):  # two edges cut off: "corner5tl" keeps the top left 95 %
        keep, corner = 1 - int(edit[6:-2]) / 100, edit[-2:]
        left = 0 if corner[1] == "l" else width - int(width * keep)
        top = 0 if corner[0] == "t" else height - int(height * keep)
        out = image.crop((left, top, left + int(width * keep), top + int(height * keep)))
    elif edit == "text":
        out = image.copy()
        ImageDraw.Draw(out).text((width // 20, height // 20), "(c) fld-engine 2026", fill=(255, 255, 255))  # fmt: skip
    else:
        out = image.transpose(0)  # FLIP_LEFT_RIGHT
    return np.asarray(out.convert("RGB"))


def accuracy() -> dict:
    import duckdb
    from PIL import Image

    from engine.dedup import image_hashes
    from engine.scenes import generate_scenes

    originals: dict[str, Image.Image] = {
        p.stem: Image.open(p).convert("RGB") for p in sorted(DEMO.iterdir()) if p.is_file()
    }
    with tempfile.TemporaryDirectory() as folder:
        generate_scenes(folder, SCENES, seed=11)
        for path in sorted((Path(folder) / "images").glob("*.jpg")):
            originals[f"scene_{path.stem}"] = Image.open(path).convert("RGB")
    rows, origin, edit_of = [], {}, {}
    for index, (name, image) in enumerate(originals.items()):
        pixels = np.asarray(image)
        rows.append((name, f"{index:04d}/{name}", image.width, image.height, *image_hashes(pixels).values()))  # fmt: skip
        origin[name], edit_of[name] = name, None
        if name.startswith("scene_") and index % 4:
            continue
        for edit in EDITS:
            copy = f"{name}~{edit}"
            pixels = edited(image, edit)
            rows.append((copy, f"{index:04d}/{copy}", pixels.shape[1], pixels.shape[0], *image_hashes(pixels).values()))  # fmt: skip
            origin[copy], edit_of[copy] = name, edit
    # Each edit is grouped alone with the originals: with every copy of a photo in one run,
    # a copy the hashes miss would still join its photo's group through a sibling copy (a
    # 7 % crop through the 5 % and 10 % ones), and the recall would say nothing of it.
    found: set[tuple[str, str]] = set()
    recall, hits, counted, facts = {}, 0, 0, {}
    originals_rows = [row for row in rows if edit_of[row[0]] is None]
    for edit in EDITS:
        edit_rows = [row for row in rows if edit_of[row[0]] == edit]
        group_of, facts = _group(duckdb, originals_rows + edit_rows)
        found |= _found_pairs(group_of)
        edit_hits = sum(group_of.get(row[0]) is not None and group_of.get(row[0]) == group_of.get(origin[row[0]]) for row in edit_rows)  # fmt: skip
        recall[edit] = round(edit_hits / len(edit_rows), 4)
        if edit in COUNTED:
            hits, counted = hits + edit_hits, counted + len(edit_rows)
    wrong = sorted(pair for pair in found if origin[pair[0]] != origin[pair[1]])
    # And every copy at once, as a corpus would hold them (copies may join through others).
    together, _ = _group(duckdb, rows)
    together_wrong = [pair for pair in _found_pairs(together) if origin[pair[0]] != origin[pair[1]]]
    return {
        "originals": len(originals),
        "scenes": SCENES,
        "copies": len(rows) - len(originals_rows),
        "found_pairs": len(found),
        "wrong_pairs": len(wrong),
        "wrong_examples": wrong[:10],
        "precision": round(1 - len(wrong) / len(found), 4) if found else None,
        "recall_per_edit": recall,
        "recall_edits_that_keep_the_image": round(hits / counted, 4),
        "all_copies_at_once": {
            "found_pairs": len(_found_pairs(together)),
            "wrong_pairs": len(together_wrong),
            "copies_in_their_photo_group": sum(
                together.get(row[0]) is not None
                and together.get(row[0]) == together.get(origin[row[0]])
                for row in rows
                if edit_of[row[0]] in COUNTED
            ),  # fmt: skip
            "copies_counted": sum(edit_of[row[0]] in COUNTED for row in rows),
        },
        "facts": facts,
    }


def _group(duckdb, rows: list[tuple]) -> tuple[dict[str, str], dict]:
    """``find_duplicates`` over ``rows`` (image_id, uri, width, height, the hashes):
    {image_id: group_id} of the grouped images, and the grouping's facts."""
    from engine.dedup import find_duplicates

    connection = duckdb.connect()
    connection.execute(
        "CREATE TABLE imgs (image_id VARCHAR, uri VARCHAR, width INT, height INT, "
        "pixel_sha256 VARCHAR, phash BIGINT, phash_crops BIGINT[])"
    )
    connection.executemany("INSERT INTO imgs VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    table, facts = find_duplicates(connection, "SELECT * FROM imgs")
    connection.close()
    return {row["image_id"]: row["group_id"] for row in table.to_pylist()}, facts


def _found_pairs(group_of: dict[str, str]) -> set[tuple[str, str]]:
    return {
        tuple(sorted(pair))
        for members in _groups(group_of).values()
        for pair in itertools.combinations(members, 2)
    }


def _groups(group_of: dict[str, str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for image_id, group in group_of.items():
        groups.setdefault(group, []).append(image_id)
    return groups


def hashing_cost(repeats: int = 5) -> dict:
    from PIL import Image

    from engine.dedup import hamming, image_hashes

    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(DEMO.iterdir()) if p.is_file()]  # fmt: skip
    out: dict = {}

    def per_image(function) -> float:
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            for pixels in photos:
                function(pixels)
            times.append((time.perf_counter() - began) / len(photos) * 1000)
        return round(float(np.median(times)), 3)

    out["engine_ms_per_image"] = per_image(image_hashes)
    try:
        import imagehash
        from PIL import Image as PILImage
    except ImportError:
        out["imagehash"] = "not importable (see the module docstring)"
    else:
        out["imagehash_ms_per_image"] = per_image(lambda p: imagehash.phash(PILImage.fromarray(p)))  # fmt: skip
        agree = []
        for pixels in photos:
            theirs = int(str(imagehash.phash(PILImage.fromarray(pixels))), 16)
            ours = image_hashes(pixels)["phash"] & ((1 << 64) - 1)
            agree.append(64 - hamming(ours, theirs))
        out["bits_agreeing_with_imagehash"] = agree
    out["pipeline"] = pipeline_share()
    return out


def pipeline_share() -> dict:
    """A default-config run of the demo photos, in-process: hashing's share of the stage
    seconds its markers record."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "corpus"
        subprocess.run(
            [str(REPO / ".venv" / "bin" / "fld"), "run", str(DEMO), "--out", str(out), "--quiet"],
            check=True, capture_output=True,
        )  # fmt: skip
        stages: dict[str, float] = {}
        for marker in (out / "iteration=0" / "_shards").glob("*.json"):
            for stage, seconds in json.loads(marker.read_text())["timings"].items():
                if isinstance(seconds, (int, float)):
                    stages[stage] = stages.get(stage, 0.0) + seconds
        run = json.loads((out / "iteration=0" / "run.json").read_text())
    total = sum(stages.values())
    return {
        "hash_seconds": round(stages.get("hash", 0.0), 4),
        "stage_seconds_total": round(total, 3),
        "hash_share": round(stages.get("hash", 0.0) / total, 5),
        "grouping_seconds": run["duplicates"]["seconds"],
        "wall_seconds": run["timings"]["wall_seconds_last_run"],
    }


def write_synthetic(path: Path, n: int) -> int:
    """``n`` random hashes and 1 % planted copies (1-4 bits off), each image with its crop
    hashes (random); returns the copies."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.dedup import CROP_BOXES

    rng = np.random.default_rng(26)
    hashes = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64)
    planted = np.arange(0, n, 100)
    flips = np.zeros(len(planted), np.uint64)
    for k in range(4):
        bit = rng.integers(0, 64, len(planted)).astype(np.uint64)
        use = rng.random(len(planted)) < (1.0 if k == 0 else 0.5)
        flips ^= np.where(use, np.uint64(1) << bit, np.uint64(0))
    copies = (hashes[planted].view(np.uint64) ^ flips).view(np.int64)
    total = n + len(planted)
    # Every image has its crop hashes too, as many as the engine stores: random.
    variants = len(CROP_BOXES)
    crops = rng.integers(
        np.iinfo(np.int64).min, np.iinfo(np.int64).max, (total, variants), dtype=np.int64
    )
    ids = [f"{i:032x}" for i in range(n + len(planted))]
    table = pa.table({
        "image_id": ids,
        "uri": [f"s3://bucket/{i}.jpg" for i in range(n + len(planted))],
        "width": np.full(n + len(planted), 640, np.int32),
        "height": np.full(n + len(planted), 480, np.int32),
        "pixel_sha256": [f"{i:032x}" for i in range(n + len(planted))],
        "phash": np.concatenate([hashes, copies]),
        "phash_crops": pa.FixedSizeListArray.from_arrays(crops.reshape(-1), variants).cast(pa.list_(pa.int64())),
        "copy_of": np.concatenate([np.full(n, -1), planted]).astype(np.int64),
    })  # fmt: skip
    pq.write_table(table, path, row_group_size=1_000_000)
    return len(planted)


def group_parquet(path: str, crop_hashes: bool) -> dict:
    """The child of ``scale``: group the Parquet file's hashes (with ``dedup.crop_hashes``
    as given); seconds, peak RSS, and how many planted copies landed in their original's
    group."""
    import duckdb
    from workload import peak_rss_bytes

    from engine.dedup import find_duplicates

    connection = duckdb.connect()
    connection.execute("SET memory_limit = '700MB'")
    connection.execute(f"SET temp_directory = '{Path(path).parent / 'spill'}'")
    began = time.perf_counter()
    table, facts = find_duplicates(
        connection,
        f"SELECT image_id, uri, width, height, pixel_sha256, phash, phash_crops FROM read_parquet('{path}')",
        {"crop_hashes": crop_hashes},
    )
    seconds = time.perf_counter() - began
    group_of = dict(zip(table.column("image_id").to_pylist(), table.column("group_id").to_pylist(), strict=True))  # fmt: skip
    planted = connection.execute(
        f"SELECT image_id, printf('%032x', copy_of) FROM read_parquet('{path}') WHERE copy_of >= 0"
    ).fetchall()
    found = sum(group_of.get(c) is not None and group_of.get(c) == group_of.get(o) for c, o in planted)  # fmt: skip
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_rss_bytes() / 2**20),
        "planted_found": found,
        "planted": len(planted),
        "facts": facts,
    }


def scale(n: int) -> dict:
    """Group ``n`` synthetic images, each with its own hash and its crop hashes (``1 +
    len(CROP_BOXES)`` hashes an image, as the engine stores them), twice, each in a fresh
    process: as the engine groups by default, and with ``dedup.crop_hashes: false`` (the
    own hashes alone)."""
    from engine.dedup import CROP_BOXES

    parts = {}
    with tempfile.TemporaryDirectory(prefix="fld-dedup-") as folder:
        path = Path(folder) / "hashes.parquet"
        write_synthetic(path, n)
        for crop_hashes in (True, False):
            print(f"dedup: grouping {n:,} images, crop_hashes {crop_hashes} ...", file=sys.stderr, flush=True)  # fmt: skip
            completed = subprocess.run(
                [sys.executable, __file__, "--child", str(path), *([] if crop_hashes else ["--own-only"])],
                capture_output=True, text=True, check=True,
                env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"},
            )  # fmt: skip
            hashes = round(n * 1.01) * (1 + (len(CROP_BOXES) if crop_hashes else 0))
            parts["crop_hashes" if crop_hashes else "own_hashes_only"] = {
                "images": n, "hashes_compared": hashes,
                **json.loads(completed.stdout.strip().splitlines()[-1]),
            }  # fmt: skip
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hashes", type=int, default=10_000_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--own-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--part", choices=("accuracy", "scale"),
        help="run one part alone and print it (nothing is saved; the saved result has every part)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.child:
        print(json.dumps(group_parquet(args.child, crop_hashes=not args.own_only)))
        return
    if args.part:
        print(json.dumps(accuracy() if args.part == "accuracy" else scale(args.hashes), indent=1))
        return
    from machine import describe_machine

    run_id = new_run_id()
    started = time.time()
    print("dedup: accuracy ...", file=sys.stderr, flush=True)
    accuracy_result = accuracy()
    print("dedup: hashing cost ...", file=sys.stderr, flush=True)
    cost = hashing_cost()
    scales = scale(args.hashes)
    scale_result, scale_own = scales["crop_hashes"], scales["own_hashes_only"]
    result = {
        "benchmark": "dedup",
        "run_id": run_id,
        "accuracy": accuracy_result,
        "hashing": cost,
        "scale": scales,
        "headlines": [
            {
                "measure": "pair precision",
                "ratio": accuracy_result["precision"],
                "target": ">= 0.99",
                "met": (accuracy_result["precision"] or 0) >= 0.99,
            },
            {
                "measure": "recall, edits that keep the image (flips not counted)",
                "ratio": accuracy_result["recall_edits_that_keep_the_image"],
                "target": ">= 0.95",
                "met": accuracy_result["recall_edits_that_keep_the_image"] >= 0.95,
            },
            {
                "measure": "hashing share of the pipeline's stage time",
                "ratio": cost["pipeline"]["hash_share"],
                "target": "<= 0.01",
                "met": cost["pipeline"]["hash_share"] <= 0.01,
            },
            *(
                {
                    "measure": f"grouping {args.hashes:,} images, {label}, {what}",
                    "ratio": part[key],
                    "target": target,
                    "met": part[key] < limit,
                }
                for label, part in (
                    (
                        f"{scale_result['hashes_compared']:,} hashes (own and crops, the default)",
                        scale_result,
                    ),
                    (f"{scale_own['hashes_compared']:,} hashes (crop_hashes: false)", scale_own),
                )
                for what, key, target, limit in (
                    ("seconds", "seconds", "< 60", 60),
                    ("peak RSS MiB", "peak_rss_mib", "< 1024", 1024),
                )
            ),
        ],  # fmt: skip
        "bench_seconds": round(time.time() - started, 1),
        "machine": describe_machine(),
    }
    kept = save_result("dedup", result, run_id)
    print(json.dumps(result["headlines"], indent=2))
    print(json.dumps(accuracy_result["recall_per_edit"]))
    print(f"kept: {kept}")


if __name__ == "__main__":
    main()
