"""The Python API (``import fld``): the code the ``fld`` command runs, for notebooks and scripts.

    import fld

    corpus = fld.run("demo/images", "out/corpus", overrides=["run.executor=local"])
    corpus = fld.open("out/corpus")           # a folder or a store URI (s3://...)
    corpus.sql("SELECT label, count(*) AS n FROM regions WHERE kept GROUP BY label").df()
    print(corpus.stats())                    # the tables `fld stats` prints
    corpus.show("bus.jpg")                   # a PIL image: a notebook draws it inline
    corpus.diff(0, 1)                        # kept regions added/removed/changed per label
    corpus.export("coco", "out/coco")        # florence2 | coco | yolo
    corpus.refine(iterations=1)              # the refinement loop, as `fld refine`
    corpus.eval("annotations.json")          # against COCO ground truth, as `fld eval`
    corpus.review(limit=20)                  # to Label Studio, as `fld review`
    corpus.import_reviews()                  # people's verdicts back, as `fld import-reviews`

Every method reads only committed iterations and validates what it is given as the CLI does
(a bad config raises ``ConfigError`` naming the key before any work; a corpus problem
``CorpusError``). ``sql`` is read-only as ``fld sql`` is (one SELECT-like statement, the
corpus's own files only): a corpus is data from someone else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Stats:
    """``fld stats`` as data: ``tables`` maps each section's title (``"regions per kind"``,
    ...) to a ``pyarrow.Table``; ``str(stats)`` is the text the command prints, and a
    notebook shows that text."""

    corpus: str
    committed: list[int]
    tables: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        from engine.query import format_table

        parts = [f"corpus {self.corpus}: committed iterations {self.committed or 'none'}"]
        for title, table in self.tables.items():
            rows = list(zip(*table.to_pydict().values(), strict=True))
            body = format_table(table.column_names, rows) if rows else "(none)"
            parts.append(f"\n== {title} ==\n{body}")
        return "\n".join(parts)

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython: the text, not the repr
        printer.text(str(self))


class Corpus:
    """A corpus folder or store URI (``fld.open``). ``path``: what it was opened with."""

    def __init__(self, path: str | Path):
        from engine.corpus import Corpus as Store

        self.path = str(path)
        self._store = Store(path)
        if not self._store.root.is_dir():
            from engine.corpus import CorpusError

            raise CorpusError(f"{path} is not a corpus folder")

    def __repr__(self) -> str:
        return f"fld.Corpus({self.path!r}, committed iterations {self.iterations})"

    @property
    def iterations(self) -> list[int]:
        """The committed iterations, in order."""
        return self._store.iterations()

    def sql(self, query: str, iterations: list[int] | None = None):
        """A DuckDB relation over the views ``images``, ``texts``, ``regions``, ``phrases``,
        ``errors`` (every committed iteration, or ``iterations``): ``.df()``, ``.arrow()``,
        ``.pl()`` and ``.fetchall()`` work as DuckDB's do.

        >>> corpus.sql("SELECT count(*) AS n FROM regions WHERE kept").fetchall()  # doctest: +SKIP
        [(42,)]
        """
        from engine.query import connect, read_only_statement

        statement = read_only_statement(query)
        return connect(self.path, iterations, sandbox=True).sql(statement)

    def stats(self) -> Stats:
        """The statistics ``fld stats`` prints, as tables (see ``Stats``).

        >>> corpus.stats().tables["regions per kind"].to_pylist()  # doctest: +SKIP
        """
        from engine.query import STATS_QUERIES, connect

        connection = connect(self.path)
        tables = {title: connection.sql(query).to_arrow_table() for title, query in STATS_QUERIES.items()}  # fmt: skip
        return Stats(self.path, self.iterations, tables)

    def image_of(self, image: str, iteration: int) -> tuple[str, str]:
        """``(image_id, uri)`` of the one image of ``iteration`` whose id starts with
        ``image``, whose URI is ``image`` or whose file name is ``image``."""
        from engine.corpus import CorpusError
        from engine.query import connect

        found = (
            connect(self.path, [iteration])
            .execute(
                "SELECT image_id, uri FROM images WHERE image_id LIKE ? || '%' OR uri = ? "
                "OR uri LIKE '%/' || ? ORDER BY uri LIMIT 2",
                [image, image, image],
            )
            .fetchall()
        )
        if not found:
            raise CorpusError(
                f"no image matching {image!r} in iteration {iteration} of {self.path}"
            )
        if len(found) > 1:
            raise CorpusError(
                f"{image!r} matches several images ({found[0][1]}, {found[1][1]}, ...)"
            )
        return found[0]

    def show(
        self,
        image: str,
        iteration: int | None = None,
        phrases: bool = False,
        all_rows: bool = False,
    ):
        """The image drawn with its kept regions (or grounded ``phrases``; ``all_rows``: the
        dropped ones too), as a ``PIL.Image.Image``: a notebook displays it inline.

        >>> corpus.show("bus.jpg").save("bus.png")  # doctest: +SKIP
        """
        from engine.draw import draw_phrases, draw_regions
        from engine.query import connect

        chosen = self._store.select_iteration(iteration)
        image_id, uri = self.image_of(image, chosen)
        table = "phrases" if phrases else "regions"
        order = "phrase_id, score" if phrases else "kind, score"
        cursor = connect(self.path, [chosen]).execute(
            f"SELECT * FROM {table} WHERE image_id = ? {'' if all_rows else 'AND kept'} "
            f"ORDER BY {order}",
            [image_id],
        )
        columns = [d[0] for d in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        pixels = self._store.load_image(uri, chosen)
        title = f"{Path(uri.split('::')[-1]).name}  iteration {chosen}"
        drawn = draw_phrases(pixels, rows, title) if phrases else draw_regions(pixels, rows, title)
        drawn.info["rows"] = len(rows)
        drawn.info["uri"] = uri
        return drawn

    def diff(self, a: int, b: int):
        """Kept regions added, removed, changed and unchanged from iteration ``a`` to ``b``,
        per kind and label, as a ``pyarrow.Table`` (``fld diff``)."""
        from pipelines.diff import diff_iterations

        return to_table(diff_iterations(self.path, a, b))

    def eval(self, ground_truth: str | Path, iteration: int | None = None, write: bool = False):
        """Kept labels against COCO ground truth (``fld eval``): results by iteration;
        ``write`` stores each in the iteration's ``run.json`` as the command does."""
        from pipelines.evaluate import evaluate_corpus

        return evaluate_corpus(self.path, ground_truth, iteration, write=write)

    def eval_reviews(self, iteration: int | None = None) -> dict:
        """Kept labels against people's labels of the reviewed hold-out images
        (``fld eval --reviews``): results by iteration, in ``eval``'s shape."""
        from pipelines.review import evaluate_reviews_corpus

        return evaluate_reviews_corpus(self.path, iteration)

    def review(self, url: str | None = None, token: str | None = None, **options):
        """Send images for review to Label Studio (``fld review``; ``options`` as its flags:
        ``limit``, ``sample``, ``seed``, ``iteration``, ``holdout``, ``images``,
        ``document_root``, ``project``, ``title``). ``url`` and ``token`` default to
        ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``. Returns what was sent.

        >>> corpus.review(limit=10, sample="random").project  # doctest: +SKIP
        'http://127.0.0.1:8080/projects/3'
        """
        from engine.corpus import CorpusLock
        from engine.label_studio import client_from
        from pipelines.review import ReviewOptions, send_for_review

        client = client_from(url, token)
        with CorpusLock.at(self._store.root, "review"):
            return send_for_review(self.path, client, ReviewOptions(**options))

    def import_reviews(self, url: str | None = None, token: str | None = None):
        """Bring finished reviews back into the ``reviews`` table (``fld import-reviews``);
        the next ``refine`` takes people's labels as the truth on those images.

        >>> corpus.import_reviews().verdicts  # doctest: +SKIP
        {'accepted': 16, 'corrected': 2, 'rejected': 1}
        """
        from engine.corpus import CorpusLock
        from engine.label_studio import client_from
        from pipelines.review import import_reviews

        client = client_from(url, token)
        with CorpusLock.at(self._store.root, "import-reviews"):
            return import_reviews(self.path, client)

    def export(self, fmt: str, out: str | Path, iteration: int | None = None, **options) -> dict:
        """Training data as ``fmt`` (``florence2``, ``coco``, ``yolo``) in ``out``
        (``fld export``; ``options`` as its flags: ``include_dropped``, ``overwrite``,
        ``val_fraction``, ``copy_images``); returns the export's summary."""
        from pipelines.exports import export_corpus

        return export_corpus(self.path, fmt, out, iteration=iteration, **options)

    def refine(
        self,
        iterations: int = 1,
        config: str | Path | None = None,
        overrides: Sequence[str] = (),
        progress: bool = True,
        accept_worse: bool = False,
    ) -> list:
        """Refinement iterations 1..``iterations`` not yet committed (``fld refine``), with
        the config iteration 0 was made with unless ``config`` is given; ``overrides`` are
        ``KEY=VALUE`` strings as ``--set`` takes; ``accept_worse`` as ``--accept-worse``.
        Returns each iteration's summary."""
        from engine.corpus import CorpusLock
        from pipelines.refine import refine_corpus

        chosen = resolved_config(self, config, overrides)
        with CorpusLock.at(self._store.root, "refine"):
            return refine_corpus(
                self.path, iterations, chosen, show_progress=progress, accept_worse=accept_worse
            )

    def to_hf_dataset(self, iteration: int | None = None, split: str = "train"):
        """The kept labels of one iteration as a Hugging Face ``datasets.Dataset``: one row
        per image with ``image`` (decoded as the iteration decoded it), ``image_id``,
        ``width``, ``height``, ``objects`` (kept ``object`` regions: ``bbox`` as
        ``[x0, y0, x1, y1]`` pixels, ``label``, ``score``, ``source``) and ``texts`` (kept
        texts by granularity). Needs the ``datasets`` package."""
        import datasets

        chosen = self._store.select_iteration(iteration)
        features = datasets.Features(
            {
                "image": datasets.Image(),
                "image_id": datasets.Value("string"),
                "width": datasets.Value("int32"),
                "height": datasets.Value("int32"),
                "objects": [  # a list of dicts (datasets' Sequence of a dict is a dict of lists)
                    {
                        "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
                        "label": datasets.Value("string"),
                        "score": datasets.Value("float32"),
                        "source": datasets.Value("string"),
                    }
                ],
                "texts": {
                    granularity: datasets.Value("string")
                    for granularity in ("brief", "detailed", "more_detailed")
                },
            }
        )
        return datasets.Dataset.from_generator(
            hf_rows, features=features, split=split,
            gen_kwargs={"corpus": self, "iteration": chosen},
        )  # fmt: skip


def hf_rows(corpus: Corpus, iteration: int):
    """``to_hf_dataset``'s rows, one image at a time."""
    from PIL import Image

    from engine.query import connect

    connection = connect(corpus.path, [iteration])
    images = connection.execute(
        "SELECT image_id, uri, width, height FROM images ORDER BY uri"
    ).fetchall()
    for image_id, uri, width, height in images:
        objects = connection.execute(
            "SELECT x0, y0, x1, y1, label, score, source FROM regions "
            "WHERE image_id = ? AND kept AND kind = 'object' ORDER BY score DESC",
            [image_id],
        ).fetchall()
        texts = dict(
            connection.execute(
                "SELECT granularity, first(text ORDER BY score DESC) FROM texts "
                "WHERE image_id = ? AND kept GROUP BY granularity",
                [image_id],
            ).fetchall()
        )
        yield {
            "image": Image.fromarray(corpus._store.load_image(uri, iteration)),
            "image_id": image_id,
            "width": width,
            "height": height,
            "objects": [
                {"bbox": [x0, y0, x1, y1], "label": label, "score": score, "source": source}
                for x0, y0, x1, y1, label, score, source in objects
            ],
            "texts": {g: texts.get(g) for g in ("brief", "detailed", "more_detailed")},
        }


def to_table(rows: list[dict]):
    """A ``pyarrow.Table`` of a list of dicts."""
    import pyarrow as pa

    return pa.Table.from_pylist(rows)


def resolved_config(corpus: Corpus | None, config: str | Path | None, overrides: Sequence[str]):
    """``config`` (a YAML file) with ``overrides``; without one, the config iteration 0 of
    ``corpus`` was made with (checked as a stored config is: ``pipelines.stored``), or the
    offline default for a new corpus."""
    from pipelines.config import load_config, validate_tree

    if config is not None or corpus is None or not corpus._store.is_committed(0):
        return load_config(config, list(overrides))
    from pipelines.stored import stored_config_tree

    return validate_tree(stored_config_tree(corpus._store, 0, overrides), list(overrides))


def open(path: str | Path) -> Corpus:  # noqa: A001 - the API's verb, as in fld.open
    """The corpus at ``path`` (a folder, or a store URI such as ``s3://bucket/corpus``).

    >>> corpus = fld.open("demo/corpus")  # doctest: +SKIP
    """
    return Corpus(path)


def run(
    inputs: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> Corpus:
    """Annotate ``inputs`` (a folder, tars, a Parquet file or a URL list) into the corpus at
    ``out``, as ``fld run`` does (resumes; does nothing for a committed iteration); returns
    the corpus. ``overrides``: ``KEY=VALUE`` strings as ``--set`` takes (e.g.
    ``"run.executor=local"`` to annotate in this process, without Ray).

    >>> corpus = fld.run("demo/images", "out/corpus", overrides=["run.executor=local"])  # doctest: +SKIP
    """
    from engine.corpus import CorpusLock
    from pipelines.annotate import annotate_corpus
    from pipelines.config import load_config
    from pipelines.doctor import check_models_load

    chosen = load_config(config, list(overrides))
    check_models_load(chosen)
    with CorpusLock.at(str(out), "run"):
        annotate_corpus(chosen, str(inputs), str(out), show_progress=progress)
    return Corpus(out)
