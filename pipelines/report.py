"""``fld report CORPUS --out report.html``: one self-contained HTML page about a corpus.

Everything is embedded (plots and gallery images as base64 PNG/JPEG, CSS inline, no
script, no external reference), so the file can be mailed or opened from anywhere.

Layout: counts per table and iteration, and changes from one iteration to the next; a grid
of plots (kept rows per iteration, kept object labels, score distributions per source for
regions / texts / phrases, kept vs dropped rows by reason, texts' object / attribute /
action averages per granularity); a gallery of sample images (latest iteration; a stable
draw by ``image_id``) with their kept regions drawn, their grounded phrases where the
corpus has them, and their brief caption; then the tables behind the plots, regions per
kind and source, and errors.

Every figure comes from an SQL aggregate over the Parquet files (DuckDB): the report's
memory does not grow with the corpus; only the gallery's few images are decoded.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global backend state

from engine.corpus import Corpus
from engine.query import STATS_QUERIES, connect

TABLE_NAMES = ("images", "texts", "regions", "phrases", "errors")
GRANULARITIES = ("brief", "detailed", "more_detailed")
SCORE_BINS = 20
THUMBNAIL = 640  # longest side of a gallery image, in pixels

CSS = """
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1320px; color: #222; background: #fff; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 2px solid #ddd; }
.meta { color: #666; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
img.plot { max-width: 100%; border: 1px solid #eee; }
.row { display: flex; gap: 48px; align-items: flex-start; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 8px 24px; }
.panel h2 { font-size: 17px; } .wide { grid-column: 1 / -1; }
.gallery { display: flex; flex-wrap: wrap; gap: 16px; }
.card { border: 1px solid #ddd; padding: 8px; width: 630px; }
.card img { max-width: 100%; display: block; margin-bottom: 6px; }
.card p { margin: 4px 0; font-size: 13px; }
.note { color: #666; font-size: 13px; }
"""


def esc(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def html_table(columns: list[str], rows: list[tuple], left: int = 1) -> str:
    if not rows:
        return '<p class="note">(none)</p>'
    head = "".join(
        f'<th class="{"l" if i < left else ""}">{esc(c)}</th>' for i, c in enumerate(columns)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{esc(v)}</td>' for i, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def png_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def plot_img(fig, alt: str) -> str:
    return f'<img class="plot" alt="{esc(alt)}" src="{png_data_uri(fig)}">'


@dataclass
class Section:
    """A part of the report: its plot (for the grid of plots at the top) and its table
    (for the tables after the gallery); ``wide`` plots span both grid columns."""

    title: str
    plot: str = ""
    table: str = ""
    note: str = ""
    wide: bool = False


class Report:
    def __init__(self, corpus_path: str | Path, samples: int = 6, keep_duplicates: bool = False):
        """``keep_duplicates``: count the copies in duplicate groups too (by default the
        tables are read without them: ``engine.query.connect(duplicates="skip")``)."""
        self.corpus = Corpus(corpus_path)
        self.iterations = self.corpus.select_iterations()
        # The gallery's iteration: the corpus's default (the latest committed one that
        # people's hold-out reviews did not judge worse than its parent).
        self.latest = self.corpus.select_iteration(None)
        self.connection = connect(corpus_path, duplicates="view" if keep_duplicates else "skip")
        self.samples = samples

    def rows(self, query: str, parameters: list | None = None) -> list[tuple]:
        return self.connection.execute(query, parameters or []).fetchall()

    def columns_rows(self, query: str) -> tuple[list[str], list[tuple]]:
        cursor = self.connection.execute(query)
        return [d[0] for d in cursor.description], cursor.fetchall()

    # ------------------------------------------------------------------------ sections

    def counts(self) -> Section:
        columns, rows = self.columns_rows(STATS_QUERIES["rows per table and iteration"])
        return Section("Rows per table and iteration", table=html_table(columns, rows, left=1))

    def iteration_changes(self) -> Section:
        kept = {}
        for table in TABLE_NAMES:
            condition = "TRUE" if table in ("images", "errors") else "kept"
            for iteration, count in self.rows(
                f"SELECT iteration, count(*) FILTER ({condition}) FROM {table} GROUP BY 1"
            ):
                kept[(table, iteration)] = count
        columns = ["table", *[f"iteration {k}" for k in self.iterations]]
        columns += [f"change {a}→{b}" for a, b in itertools.pairwise(self.iterations)]
        rows = []
        for table in TABLE_NAMES:
            values = [kept.get((table, k), 0) for k in self.iterations]
            changes = [f"{b - a:+d}" for a, b in itertools.pairwise(values)]
            rows.append((table, *values, *changes))
        fig = Figure(figsize=(6.4, 3.6))
        axis = fig.add_subplot()
        width = 0.8 / len(self.iterations)
        for index, iteration in enumerate(self.iterations):
            axis.bar(
                [t + index * width for t in range(len(TABLE_NAMES))],
                [kept.get((table, iteration), 0) for table in TABLE_NAMES],
                width=width,
                label=f"iteration {iteration}",
            )
        axis.set_xticks([t + 0.4 - width / 2 for t in range(len(TABLE_NAMES))], TABLE_NAMES)
        axis.set_ylabel("kept rows (errors: all)")
        axis.set_title("Kept rows per iteration")
        axis.legend()
        note = (
            ""
            if len(self.iterations) > 1
            else '<p class="note">One committed iteration so far: changes appear once the '
            "refinement loop commits the next.</p>"
        )
        return Section(
            "Per-iteration changes (kept rows)",
            plot=plot_img(fig, "kept rows per iteration"),
            table=html_table(columns, rows),
            note=note,
        )

    def labels(self) -> Section:
        rows = self.rows(
            "SELECT label, count(*), round(avg(score), 3), count(DISTINCT image_id) FROM regions "
            "WHERE kept AND kind = 'object' AND iteration = ? GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 40",
            [self.latest],
        )
        title = f"Kept object labels (iteration {self.latest}, top 40)"
        if not rows:
            return Section(title, note='<p class="note">(no kept object regions)</p>')
        shown = rows[:25]
        fig = Figure(figsize=(6.4, max(2.0, 0.25 * len(shown) + 1.2)))
        axis = fig.add_subplot()
        axis.barh([r[0] for r in shown][::-1], [r[1] for r in shown][::-1], color="#4c72b0")
        axis.set_xlabel("kept object regions")
        axis.set_title(f"Label histogram (top {len(shown)})")
        table = html_table(["label", "kept regions", "mean score", "images"], rows)
        return Section(title, plot=plot_img(fig, "label histogram"), table=table)

    def scores(self) -> Section:
        panels = []
        for table in ("regions", "texts", "phrases"):
            rows = self.rows(
                f"SELECT source, least(floor(score * {SCORE_BINS}), {SCORE_BINS - 1})::INT AS b, "
                f"count(*) FROM {table} WHERE iteration = ? GROUP BY 1, 2 ORDER BY 1, 2",
                [self.latest],
            )
            if rows:
                panels.append((table, rows))
        title = f"Score distributions per source (iteration {self.latest}, all rows)"
        if not panels:
            return Section(title, note='<p class="note">(no scored rows)</p>')
        fig = Figure(figsize=(4.4 * len(panels), 3.4))
        centres = [(b + 0.5) / SCORE_BINS for b in range(SCORE_BINS)]
        for index, (table, rows) in enumerate(panels):
            axis = fig.add_subplot(1, len(panels), index + 1)
            sources = sorted({r[0] for r in rows})
            for source in sources:
                counts = [0] * SCORE_BINS
                for row_source, bin_index, count in rows:
                    if row_source == source:
                        counts[bin_index] = count
                axis.step(centres, counts, where="mid", label=source, linewidth=2)
            axis.set_xlim(0, 1)
            axis.set_yscale("symlog", linthresh=1)
            axis.set_ylim(bottom=0)
            axis.set_xlabel("score")
            axis.set_ylabel("rows")
            axis.set_title(table)
            axis.legend(fontsize=7)
        fig.tight_layout()
        return Section(title, plot=plot_img(fig, "score distributions per source"), wide=True)

    def kept_dropped(self) -> Section:
        rows = self.rows(
            "SELECT 'regions', coalesce(drop_reason, 'kept'), count(*) FROM regions GROUP BY ALL "
            "UNION ALL SELECT 'texts', coalesce(drop_reason, 'kept'), count(*) FROM texts GROUP BY ALL "
            "UNION ALL SELECT 'phrases', coalesce(drop_reason, 'kept'), count(*) FROM phrases GROUP BY ALL "
            "ORDER BY 1, 3 DESC"
        )
        title = "Kept vs dropped, by reason (all iterations)"
        if not rows:
            return Section(title, note='<p class="note">(no rows)</p>')
        tables = [t for t in ("regions", "texts", "phrases") if any(r[0] == t for r in rows)]
        reasons = ["kept"] + sorted({r[1] for r in rows} - {"kept"})
        fig = Figure(figsize=(6.4, 1.6 + 0.7 * len(tables)))
        axis = fig.add_subplot()
        lefts = [0] * len(tables)
        palette = ["#55a868", "#c44e52", "#dd8452", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
                   "#ccb974", "#64b5cd", "#4c72b0"]  # fmt: skip
        for index, reason in enumerate(reasons):
            values = [next((r[2] for r in rows if r[0] == t and r[1] == reason), 0) for t in tables]
            axis.barh(tables, values, left=lefts, label=reason, color=palette[index % len(palette)])
            lefts = [a + b for a, b in zip(lefts, values, strict=True)]
        axis.set_xlabel("rows")
        axis.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.3))
        axis.set_title("Kept and dropped rows")
        return Section(
            title,
            plot=plot_img(fig, "kept vs dropped by reason"),
            table=html_table(["table", "kept / drop reason", "rows"], rows, left=2),
        )

    def texts(self) -> Section:
        columns, rows = self.columns_rows(
            "SELECT iteration, granularity, count(*) AS kept_texts, "
            "round(avg(n_objects), 2) AS objects, round(avg(n_attributes), 2) AS attributes, "
            "round(avg(n_actions), 2) AS actions, "
            "round(avg(object_complexity), 2) AS object_complexity, "
            "round(avg(action_complexity), 2) AS action_complexity, "
            "round(avg(length(text)), 1) AS characters "
            "FROM texts WHERE kept GROUP BY iteration, granularity "
            "ORDER BY iteration, list_position(['brief', 'detailed', 'more_detailed'], granularity)"
        )
        title = "Texts: objects, attributes and actions per granularity (kept)"
        if not rows:
            return Section(title, note='<p class="note">(no kept texts)</p>')
        latest = [r for r in rows if r[0] == self.latest]
        fig = Figure(figsize=(6.4, 3.6))
        axis = fig.add_subplot()
        measures = ["objects", "attributes", "actions"]
        width = 0.8 / max(1, len(latest))
        for index, row in enumerate(latest):
            values = [row[columns.index(m)] or 0 for m in measures]
            axis.bar([m + index * width for m in range(3)], values, width=width, label=row[1])
        axis.set_xticks([m + 0.4 - width / 2 for m in range(3)], measures)
        axis.set_ylabel("mean per text")
        axis.set_title(f"Kept texts, iteration {self.latest}")
        axis.legend()
        return Section(
            title, plot=plot_img(fig, "text statistics"), table=html_table(columns, rows, left=2)
        )

    def other_stats(self) -> list[Section]:
        sections = []
        for title in ("regions per kind", "regions per source", "errors by stage and type"):
            columns, rows = self.columns_rows(STATS_QUERIES[title])
            sections.append(Section(title.capitalize(), table=html_table(columns, rows, 2)))
        for title in ("reviews: people's verdicts per region", "iterations judged on reviewed hold-out images"):  # fmt: skip
            columns, rows = self.columns_rows(STATS_QUERIES[title])
            if rows:  # only a corpus people reviewed
                sections.append(Section(title.capitalize(), table=html_table(columns, rows, 3)))
        return sections

    def gallery(self) -> str:
        from engine import draw
        from engine.sources import ByteReader

        images = self.rows(
            "SELECT image_id, uri FROM images WHERE iteration = ? ORDER BY image_id LIMIT ?",
            [self.latest, self.samples],
        )
        title = f"<h2>Gallery (iteration {self.latest}, {len(images)} samples)</h2>"
        if not images:
            return title + '<p class="note">(no images)</p>'
        reader = ByteReader()
        cards = []
        try:
            for image_id, uri in images:
                cards.append(self.card(reader, draw, image_id, uri))
        finally:
            reader.close()
        return (
            title + '<p class="note">Kept regions (boxes, OCR quads, polygons) with labels and '
            "scores; grounded phrases where the corpus has them; the brief caption.</p>"
            + '<div class="gallery">'
            + "".join(cards)
            + "</div>"
        )

    def dict_rows(self, query: str, parameters: list) -> list[dict]:
        cursor = self.connection.execute(query, parameters)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def card(self, reader, draw, image_id: str, uri: str) -> str:
        name = Path(uri.split("::")[-1]).name
        parameters = [image_id, self.latest]
        regions = self.dict_rows(
            "SELECT * FROM regions WHERE image_id = ? AND iteration = ? AND kept "
            "ORDER BY kind, score",
            parameters,
        )
        phrases = self.dict_rows(
            "SELECT * FROM phrases WHERE image_id = ? AND iteration = ? AND kept "
            "AND box IS NOT NULL ORDER BY phrase_id, score",
            parameters,
        )
        captions = self.rows(
            "SELECT granularity, text FROM texts WHERE image_id = ? AND iteration = ? AND kept "
            "ORDER BY list_position(['brief', 'detailed', 'more_detailed'], granularity) LIMIT 1",
            parameters,
        )
        pictures = []
        try:
            pixels = self.corpus.load_image(uri, self.latest, reader)
            pictures.append(draw.draw_regions(pixels, regions, f"{name}: regions"))
            if phrases:
                pictures.append(draw.draw_phrases(pixels, phrases, f"{name}: phrases"))
        except Exception as exc:  # the image moved or is unreadable: say so, keep going
            body = f'<p class="note">cannot draw {esc(uri)}: {esc(exc)}</p>'
        else:
            body = "".join(f'<img alt="{esc(name)}" src="{jpeg_data_uri(p)}">' for p in pictures)
        kinds: dict[str, int] = {}
        for region in regions:
            kinds[region["kind"]] = kinds.get(region["kind"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no kept regions"
        caption = f"<p><b>{esc(captions[0][0])}:</b> {esc(captions[0][1])}</p>" if captions else ""
        return (
            f'<div class="card">{body}<p><b>{esc(name)}</b> <span class="note">'
            f"{esc(image_id)}</span></p><p>{esc(summary)}; {len(phrases)} phrase boxes</p>"
            f"{caption}</div>"
        )

    # -------------------------------------------------------------------------- page

    def html(self) -> str:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        head = (
            f"<h1>fld-engine corpus report</h1><p class='meta'>{esc(self.corpus.root.resolve())}"
            f" · committed iterations {esc(self.iterations)} · generated {now}</p>"
        )
        counts, changes = self.counts(), self.iteration_changes()
        overview = (
            '<div class="row">'
            + "".join(
                f"<div><h2>{esc(s.title)}</h2>{s.note}{s.table}</div>" for s in (counts, changes)
            )
            + "</div>"
        )
        plotted = [
            replace(changes, title="Kept rows per iteration"),
            self.labels(),
            self.scores(),
            self.kept_dropped(),
            self.texts(),
        ]
        plots = (
            '<div class="grid">'
            + "".join(
                f'<div class="panel{" wide" if s.wide else ""}"><h2>{esc(s.title)}</h2>'
                f"{s.plot or s.note}</div>"
                for s in plotted
            )
            + "</div>"
        )
        tables = "".join(
            f"<h2>{esc(s.title)}</h2>{s.table}"
            for s in [*plotted[1:], *self.other_stats()]
            if s.table
        )
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>fld report: {esc(self.corpus.root.name)}</title><style>{CSS}</style>"
            f"</head><body>{head}{overview}{plots}{self.gallery()}"
            f"<h1>Tables</h1>{tables}</body></html>\n"
        )


def jpeg_data_uri(image) -> str:
    image = image.copy()
    image.thumbnail((THUMBNAIL * 2, THUMBNAIL * 2))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_report(
    corpus_path: str | Path, out: str | Path, samples: int = 6, keep_duplicates: bool = False
) -> Path:
    """Write the report of ``corpus_path`` to ``out`` (one HTML file); returns its path.
    Copies of an image (duplicate groups' members that are not the representative) are
    not counted unless ``keep_duplicates``."""
    import matplotlib

    from engine.corpus import atomic_write_bytes

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Labels are the corpus's data: a "$" in one must not be read as mathtext (a label like
    # "$\\frac{a}{$" made the report crash).
    with matplotlib.rc_context({"text.parse_math": False}):
        html = Report(corpus_path, samples, keep_duplicates).html()
    atomic_write_bytes(out, html.encode("utf-8"))
    return out
