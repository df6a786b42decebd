"""Fault battery 5 and 6: what must do nothing, does nothing.

5. A rerun of a committed corpus does no work: ``fld run`` with the same arguments says
   "nothing to do", imports neither Ray nor any model library, starts no process, and
   leaves every file byte-identical with the same mtime (and no file added or removed).
6. Bad configs (unknown key, bad threshold, missing weights, unwritable output, unknown
   annotator) fail before Ray starts: ``tests/integration/test_config.py`` checks the exit
   status, the message naming the key, the time and that nothing is written, one process
   per case; this adds, for all five cases in one process, that no heavy library was imported and that no
   child process (a Ray head, raylet or worker) was ever started.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.battery import REPO, report, shared_photo_set

# Runs ``pipelines.cli.main`` (what ``fld`` runs) for each argument list given as JSON, then
# reports per case: exit status, seconds, the heavy modules imported so far, and every
# process that this process ever had as a child (ps --ppid, polled by a thread while main
# runs, so that even a short-lived child would be seen; first shown to see one it starts).
PROBE = r"""
import contextlib, io, json, os, subprocess, sys, threading, time
from pipelines.cli import main

HEAVY = ("ray", "torch", "torchvision", "cv2", "rapidocr", "ultralytics", "spacy", "transformers")
children = set()
stop = threading.Event()

def watch():
    me = str(os.getpid())
    while not stop.is_set():
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if fields[1] == me:
                    children.add(entry)
        time.sleep(0.01)

watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
# Calibration: a child the watcher must see (else "no child" below would prove nothing).
calibration = subprocess.Popen(["sleep", "0.2"])
calibration.wait()
time.sleep(0.05)
seen = str(calibration.pid) in children
children.discard(str(calibration.pid))
results = []
for argv in json.loads(sys.argv[1]):
    err, out = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(argv)
    results.append({"rc": rc, "seconds": time.monotonic() - started, "stderr": err.getvalue(),
                    "stdout": out.getvalue(),
                    "heavy": sorted(m for m in HEAVY if m in sys.modules)})
time.sleep(0.05)
stop.set()
watcher.join()
print(json.dumps({"results": results, "children": sorted(children), "watcher_saw_a_child": seen}))
"""


def probe(cases: list[list[str]]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(cases)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    probed = json.loads(result.stdout.strip().splitlines()[-1])
    assert probed["watcher_saw_a_child"], "the child-process watcher missed a known child"
    return probed


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: files by content hash, size and mtime; folders by name."""
    state = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_file():
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[key] = ("file", digest, stat.st_size, stat.st_mtime_ns)
        else:
            state[key] = ("dir",)
    return state


def test_rerun_of_committed_corpus_changes_nothing(tmp_path_factory, capsys):
    photos = shared_photo_set(tmp_path_factory)
    corpus = photos["reference"]
    before = snapshot(corpus)
    argv = ["run", str(photos["folder"]), "--out", str(corpus), "--config", str(photos["config"]),
            "--shard-size", str(photos["shard_size"])]  # fmt: skip
    started = time.monotonic()
    probed = probe([argv])
    seconds = time.monotonic() - started
    (result,) = probed["results"]
    assert result["rc"] == 0, result["stderr"]
    assert "already committed" in result["stdout"] and "nothing to do" in result["stdout"]
    assert result["heavy"] == [], "a rerun with nothing to do loaded models or Ray"
    assert probed["children"] == [], "a rerun with nothing to do started a process"
    after = snapshot(corpus)
    assert after == before, "the rerun changed, added or removed files"
    files = sum(1 for entry in before.values() if entry[0] == "file")
    report(
        capsys,
        f"\n[rerun] committed corpus rerun: exit 0, 'nothing to do', {files} files hashed, "
        f"byte-identical with the same mtimes, no Ray or model import, no child process; "
        f"main() {result['seconds']:.2f} s, {seconds:.1f} s with the interpreter",
    )


def test_bad_configs_start_no_ray_and_no_process(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    weights = tmp_path / "yolo.yaml"
    weights.write_text("annotators:\n  - {name: yolo, weights: /nonexistent/w.pt}\n")
    images = str(REPO / "demo" / "images")
    out = str(tmp_path / "corpus")
    cases = {
        "unknown key": (["--set", "bogus=1"], "bogus"),
        "bad threshold": (["--set", "filters.nms.iou_threshold=2"], "filters.nms.iou_threshold"),
        "missing weights": (["--config", str(weights)], "annotators.0.weights"),
        "unwritable output": (["--out", str(blocker / "corpus")], "--out"),
        "unknown annotator": (["--set", "annotators.0.name=nope"], "annotators.0.name"),
    }
    argvs = []
    for extra, _ in cases.values():
        target = extra[1] if extra[0] == "--out" else out
        rest = [] if extra[0] == "--out" else extra
        argvs.append(["run", images, "--out", target, *rest])
    probed = probe(argvs)
    for (name, (_, key)), result in zip(cases.items(), probed["results"], strict=True):
        assert result["rc"] == 2, (name, result["stderr"])
        assert key in result["stderr"] and "Traceback" not in result["stderr"], name
        assert result["seconds"] < 2.0, (name, result["seconds"])
        assert result["heavy"] == [], (name, result["heavy"])
    assert probed["children"] == [], "a rejected config started a process (Ray?)"
    assert not Path(out).exists() and blocker.read_text() == "not a folder"
    report(
        capsys,
        f"\n[bad-configs] {len(cases)} cases ({', '.join(cases)}): exit 2 naming the key, "
        f"slowest {max(r['seconds'] for r in probed['results']):.2f} s in main(), no heavy "
        f"import, no child process, nothing written",
    )
