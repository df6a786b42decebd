"""fld-engine's Python API. ``import fld``, then ``fld.open(path)`` or ``fld.run(...)``:
see ``pipelines.api`` (the same code the ``fld`` command runs) and docs/python-api.md."""

from pipelines.api import Corpus, Stats, open, run

__all__ = ["Corpus", "Stats", "open", "run"]
