"""The ``fld`` command line: run, doctor, dedup, stats, compact, sql, show, export, report, refine, diff, eval.

    fld run INPUT --out CORPUS [--config FILE] [--workers N] [--address ADDR]
                  [--shard-size N] [--batch-size N] [--executor auto|ray|local] [--set KEY=VALUE ...]
    fld doctor [--config FILE] [--set KEY=VALUE ...]
    fld verify CORPUS [--iteration K]
    fld dedup CORPUS [--iteration K] [--max-distance N] [--quiet]
    fld stats CORPUS
    fld compact CORPUS [--iteration K] [--target-rows N]
    fld sql CORPUS "SELECT ..." [--format table|csv|json|parquet] [--out FILE] [--limit N]
            [--timeout S]
    fld show CORPUS IMAGE_ID_OR_URI --out FILE.png [--iteration K] [--all]
    fld export CORPUS --format florence2|coco|yolo --out DIR [--iteration K] [--include-dropped] [--keep-duplicates]
    fld report CORPUS --out report.html [--samples N] [--keep-duplicates]
    fld refine CORPUS --iterations N [--config FILE] [--epochs N] [--set KEY=VALUE ...]
    fld diff CORPUS A B
    fld eval CORPUS --gt COCO.json [--iteration K] [--no-write]

Exit status: 0 on success, 2 on a bad config, input or corpus (with a message naming
what is wrong), 1 on anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from engine.offline import apply_offline_env


class UsageError(Exception):
    pass


def check_writable(out: str) -> None:
    """Fail fast if ``--out`` cannot be created or written (before any work starts): on a
    store, a probe object is written and deleted (an unsupported scheme fails here too)."""
    from engine.storage import StorageError, StorePath, location

    place = location(out, "--out")
    if isinstance(place, StorePath):
        probe = place / ".fld-probe"
        try:
            probe.write_bytes(b"")
            probe.unlink(missing_ok=True)
        except (OSError, StorageError) as exc:
            raise UsageError(f"--out: cannot write to {out} ({exc})") from None
        return
    path = place.resolve()
    probe_dir = path
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UsageError(f"--out: {probe_dir} is a file, so {out} cannot be created")
    try:
        handle, name = tempfile.mkstemp(prefix=".fld-probe-", dir=probe_dir)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise UsageError(f"--out: {probe_dir} is not writable ({exc.strerror})") from None


def command_doctor(args: argparse.Namespace) -> int:
    from pipelines.config import load_config
    from pipelines.doctor import diagnose

    diagnosis = diagnose(load_config(args.config, overrides_of(args)))
    print("\n".join(diagnosis.lines))
    if diagnosis.problems:
        print(f"\n{len(diagnosis.problems)} problem(s):", file=sys.stderr)
        for problem in diagnosis.problems:
            print(f"- {problem}", file=sys.stderr)
        print("run `make install` to put the locked versions back", file=sys.stderr)
        return 1
    print("\nok: the installed versions are the lock's and every model can load")
    return 0


def command_run(args: argparse.Namespace) -> int:
    from engine.corpus import CorpusLock
    from pipelines.config import load_config

    overrides = overrides_of(args)
    config = load_config(args.config, overrides)
    check_writable(args.out)
    from pipelines.doctor import check_models_load

    check_models_load(config)
    from engine.storage import is_remote

    remote = is_remote(args.input)
    if not remote and not Path(args.input).exists() and not any(ch in args.input for ch in "*?["):
        raise UsageError(f"INPUT: {args.input} does not exist")

    from pipelines.annotate import annotate_corpus

    with CorpusLock.at(args.out, "run"):
        if args.retry_errors:
            from engine.corpus import Corpus, reopen_for_retry

            corpus = Corpus(args.out)
            shards = reopen_for_retry(corpus, config.run.iteration)
            print(
                f"retrying transient download errors: {len(shards)} shard(s) to redo",
                file=sys.stderr,
            )
        summary = annotate_corpus(config, args.input, args.out, show_progress=not args.quiet)
    if summary.nothing_to_do:
        if summary.compaction is not None:
            from engine.compact import describe

            print(f"compacted {describe(summary.compaction)}")
        print(
            f"iteration {summary.iteration} of {summary.corpus} is already committed "
            f"({summary.n_inputs} inputs, {summary.n_shards} shards): nothing to do"
        )
        return 0
    rows = summary.counts.get("rows", {})
    kept = summary.counts.get("kept", {})
    print(
        f"committed iteration {summary.iteration} of {summary.corpus}: {summary.n_inputs} inputs in "
        f"{summary.n_shards} shards ({summary.shards_run} run now, {summary.shards_done_before} "
        f"resumed), {rows.get('images', 0)} images, {kept.get('regions', 0)} of "
        f"{rows.get('regions', 0)} regions kept, {rows.get('errors', 0)} errors, "
        f"{summary.wall_seconds:.1f} s"
    )
    if summary.compaction is not None:
        from engine.compact import describe

        print(f"compacted {describe(summary.compaction)}")
    return 0


def command_compact(args: argparse.Namespace) -> int:
    from engine.compact import DEFAULT_TARGET_ROWS, compact_iteration, describe
    from engine.corpus import Corpus

    if args.target_rows is None:
        args.target_rows = DEFAULT_TARGET_ROWS
    if args.target_rows < 1:
        raise UsageError(f"--target-rows: {args.target_rows} must be at least 1")
    corpus = Corpus(args.corpus)
    results = []
    for iteration in corpus.select_iterations(args.iteration):
        result = compact_iteration(
            corpus, iteration, args.target_rows, show_progress=not args.quiet
        )
        results.append(result)
        print(describe(result))
    before = sum(r["files_before"] for r in results)
    after = sum(r["files_after"] for r in results)
    print(f"compacted {args.corpus}: {before} data files before, {after} after")
    return 0


def command_verify(args: argparse.Namespace) -> int:
    from engine.corpus import Corpus, verify_iteration

    corpus = Corpus(args.corpus)
    iterations = corpus.select_iterations(args.iteration)
    problems = [p for iteration in iterations for p in verify_iteration(corpus, iteration)]
    for problem in problems:
        print(problem)
    print(
        f"{args.corpus}: {len(iterations)} committed iteration(s) checked, "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


def command_dedup(args: argparse.Namespace) -> int:
    from engine.corpus import CorpusLock
    from pipelines.dedup import dedup_corpus

    settings = {} if args.max_distance is None else {"max_distance": args.max_distance}
    with CorpusLock.at(args.corpus, "dedup"):
        facts = dedup_corpus(args.corpus, args.iteration, settings, not args.quiet)
    print(
        f"iteration {facts['iteration']}: {facts['groups']} duplicate groups, "
        f"{facts['duplicates']} copies of {facts['images']} images "
        f"({facts['hashed_now']} hashed now; near pairs: {facts['near_mode']})"
    )
    return 0


def command_stats(args: argparse.Namespace) -> int:
    from engine.query import stats_report

    print(stats_report(args.corpus))
    return 0


def command_sql(args: argparse.Namespace) -> int:
    import duckdb

    from engine.query import (
        QueryNotStopped,
        QueryRefused,
        QueryTimeout,
        ResultWriter,
        connect,
        stream_query,
    )

    if args.limit < 1 or args.timeout <= 0:
        raise UsageError("--limit and --timeout must be positive")
    binary = args.format == "parquet"
    if args.out:
        out = open(args.out, "wb" if binary else "w", newline="" if not binary else None)  # noqa: SIM115
    elif binary and sys.stdout.isatty():
        raise UsageError("--format parquet writes binary: give --out FILE or redirect stdout")
    else:
        out = sys.stdout.buffer if binary else sys.stdout
    connection = connect(args.corpus, sandbox=True)
    writer = ResultWriter(args.format, out, limit=args.limit, max_width=args.max_width)
    try:
        stream_query(connection, args.query, writer, args.timeout)
    except QueryRefused as exc:
        raise UsageError(f"query refused: {exc}") from None
    except QueryTimeout as exc:
        raise UsageError(str(exc)) from None
    except QueryNotStopped as exc:  # closing the connection would wait for the query: end here
        print(f"fld sql: {exc}, the process ends", file=sys.stderr)
        sys.stderr.flush()
        os._exit(exc.exit_code)
    except KeyboardInterrupt:
        print("fld sql: interrupted, the query was stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fld sql ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except duckdb.PermissionException as exc:
        first_line = str(exc).splitlines()[0]
        raise UsageError(
            f"query refused: fld sql reads only the corpus's own files and writes none ({first_line})"
        ) from None
    except duckdb.Error as exc:
        raise UsageError(f"query failed: {exc}") from None
    finally:
        if args.out:
            out.close()
        with contextlib.suppress(duckdb.Error):  # an interrupted stream may still hold it
            connection.close()
    return 0


def command_show(args: argparse.Namespace) -> int:
    from pipelines.api import Corpus

    drawn = Corpus(args.corpus).show(args.image, args.iteration, args.phrases, args.all)
    drawn.save(args.out)
    table = "phrases" if args.phrases else "regions"
    print(f"wrote {args.out}: {drawn.info['rows']} {table} rows on {drawn.info['uri']}")
    return 0


def command_export(args: argparse.Namespace) -> int:
    from pipelines.exports import ExportError, export_corpus

    options = {}
    if args.format == "yolo":
        options = {"val_fraction": args.val_fraction, "copy_images": args.copy_images}
    try:
        summary = export_corpus(
            args.corpus,
            args.format,
            args.out,
            iteration=args.iteration,
            include_dropped=args.include_dropped,
            overwrite=args.overwrite,
            keep_duplicates=args.keep_duplicates,
            **options,
        )
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    counts = ", ".join(
        f"{value} {key}"
        for key, value in summary["counts"].items()
        if isinstance(value, int) and not isinstance(value, bool)
    )
    rows = "all rows" if args.include_dropped else "kept rows"
    print(
        f"exported iteration {summary['iteration']} of {args.corpus} ({rows}) as {args.format} "
        f"to {args.out}: {counts}, {summary['seconds']:.1f} s"
    )
    return 0


def command_report(args: argparse.Namespace) -> int:
    if args.samples < 0:
        raise UsageError(f"--samples: {args.samples} is negative")
    check_writable(str(Path(args.out).resolve().parent))
    from pipelines.report import write_report

    path = write_report(args.corpus, args.out, args.samples, args.keep_duplicates)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


RUN_FLAGS = (
    ("workers", "run.workers"),
    ("address", "run.address"),
    ("shard_size", "run.shard_size"),
    ("batch_size", "run.batch_size"),
    ("executor", "run.executor"),
    ("iteration", "run.iteration"),
    ("allow_paths_outside", "input.allow_paths_outside"),
    # Every student kind's epochs: the config's refine.student.kind decides which is used.
    (
        "epochs",
        ("refine.student.epochs", "refine.student.ssd.epochs", "refine.student.florence2.epochs"),
    ),
)


def overrides_of(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides plus those of the dedicated flags a command has."""
    overrides = list(args.set or [])
    for flag, keys in RUN_FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            overrides.extend(
                f"{key}={value}" for key in ([keys] if isinstance(keys, str) else keys)
            )
    return overrides


def config_of_iteration(corpus, iteration: int, args: argparse.Namespace):
    """``--config`` with the overrides, else the config ``iteration`` was made with."""
    from pipelines.config import load_config, validate_tree

    overrides = overrides_of(args)
    if args.config:
        return load_config(args.config, overrides)
    from pipelines.stored import stored_config_tree

    return validate_tree(stored_config_tree(corpus, iteration, overrides), overrides)


def command_train(args: argparse.Namespace) -> int:
    from engine.corpus import Corpus
    from pipelines.florence2_student import train_florence2

    corpus = Corpus(args.corpus)
    iteration = corpus.select_iteration(args.iteration)
    config = config_of_iteration(corpus, iteration, args)
    summary = train_florence2(
        corpus, iteration, Path(args.out), config.refine.student.florence2, not args.quiet
    )
    print(
        f"trained on iteration {iteration}: {summary['steps']} steps, loss "
        f"{summary['loss_first']} -> {summary['loss_last']}, validation loss "
        f"{summary['val_loss']}; model: {Path(args.out) / 'model'}"
    )
    return 0


def command_refine(args: argparse.Namespace) -> int:
    from engine.corpus import Corpus, CorpusLock

    if args.iterations < 1:
        raise UsageError(f"--iterations: {args.iterations} must be at least 1")
    corpus = Corpus(args.corpus)
    if not corpus.is_committed(0):
        raise UsageError(
            f"{args.corpus} has no committed iteration 0: run `fld run INPUT --out {args.corpus}` first"
        )
    config = config_of_iteration(corpus, 0, args)  # by default iteration 0's own config
    check_writable(args.corpus)
    from pipelines.refine import corpus_verdict, refine_corpus

    with CorpusLock.at(args.corpus, "refine"):
        summaries = refine_corpus(
            args.corpus, args.iterations, config, show_progress=not args.quiet,
            accept_worse=args.accept_worse,
        )  # fmt: skip
    for summary in summaries:
        rows, kept = summary.counts.get("rows", {}), summary.counts.get("kept", {})
        print(
            f"committed iteration {summary.iteration}: {kept.get('regions', 0)} of "
            f"{rows.get('regions', 0)} regions kept, {rows.get('errors', 0)} errors"
        )
        if "review_eval" in corpus.run_info(summary.iteration):
            print(corpus_verdict(corpus, summary.iteration))
    if not summaries:
        print(
            f"iterations 1..{args.iterations} of {args.corpus} are already committed: nothing to do"
        )
    return 0


def command_review(args: argparse.Namespace) -> int:
    from engine.corpus import CorpusLock
    from engine.label_studio import client_from
    from pipelines.review import ReviewOptions, send_for_review, send_summary_text

    if args.limit < 1:
        raise UsageError(f"--limit: {args.limit} must be at least 1")
    if not 0.0 <= args.holdout < 1.0:
        raise UsageError(f"--holdout: {args.holdout} must be in [0, 1)")
    options = ReviewOptions(
        limit=args.limit, sample=args.sample, seed=args.seed, iteration=args.iteration,
        holdout=args.holdout, images=args.images, document_root=args.document_root,
        project=args.project, title=args.title,
    )  # fmt: skip
    client = client_from(args.url, args.token)
    check_writable(args.corpus)
    with CorpusLock.at(args.corpus, "review"):
        summary = send_for_review(args.corpus, client, options, show_progress=not args.quiet)
    print(send_summary_text(summary))
    return 0


def command_import_reviews(args: argparse.Namespace) -> int:
    from engine.corpus import CorpusLock
    from engine.label_studio import client_from
    from pipelines.review import import_reviews

    client = client_from(args.url, args.token)
    check_writable(args.corpus)
    with CorpusLock.at(args.corpus, "import-reviews"):
        summary = import_reviews(args.corpus, client, show_progress=not args.quiet)
    verdicts = ", ".join(f"{n} {v}" for v, n in sorted(summary.verdicts.items())) or "none"
    print(
        f"imported {summary.tasks} reviewed tasks ({summary.updated} new or changed), "
        f"{summary.pending} not reviewed yet, {summary.skipped} skipped; regions: {verdicts}"
    )
    return 0


def command_diff(args: argparse.Namespace) -> int:
    from engine.query import format_table
    from engine.reviews import HUMAN_SOURCE
    from pipelines.diff import diff_iterations, review_changes

    table = diff_iterations(args.corpus, args.a, args.b)
    columns = ["kind", "label", "added", "removed", "changed", "unchanged"]
    print(f"kept regions, iteration {args.a} -> {args.b}")
    print(format_table(columns, [tuple(row[c] for c in columns) for row in table]))
    totals = {c: sum(row[c] for row in table) for c in columns[2:]}
    print("total: " + ", ".join(f"{value} {key}" for key, value in totals.items()))
    people = review_changes(args.corpus, args.b)
    if people["human_kept"] or people["human_rejected"]:
        print(
            f"people's reviews in iteration {args.b}: {people['human_kept']} boxes of theirs kept "
            f"({HUMAN_SOURCE}, {people['human_images']} images); model boxes they replaced: "
            f"{people['human_superseded']} (human_superseded), rejected: "
            f"{people['human_rejected']} (human_rejected)"
        )
    return 0


def command_eval(args: argparse.Namespace) -> int:
    from pipelines.evaluate import EvalError, evaluate_corpus, format_results

    if bool(args.gt) == bool(args.reviews):
        raise UsageError("give one of --gt COCO.json and --reviews")
    if args.reviews:
        from pipelines.review import evaluate_reviews_corpus

        results = evaluate_reviews_corpus(args.corpus, args.iteration)
        print(f"{args.corpus} against people's labels of the reviewed hold-out images (fld import-reviews)")  # fmt: skip
        print(format_results(results))
        return 0
    try:
        results = evaluate_corpus(
            args.corpus, args.gt, iteration=args.iteration, write=not args.no_write
        )
    except EvalError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.corpus} against {args.gt} (P and R at IoU 0.5; see pipelines/evaluate.py)")
    print(format_results(results))
    if not args.no_write:
        print(f"stored under 'eval' in run.json of iteration(s) {sorted(results)}")
    return 0


def add_label_studio_arguments(parser: argparse.ArgumentParser) -> None:
    """The server, the token and ``--quiet`` of ``fld review`` and ``fld import-reviews``."""
    parser.add_argument("--url", help="the server (default: $LABEL_STUDIO_URL)")
    parser.add_argument(
        "--token", help="a personal access token or legacy token (default: $LABEL_STUDIO_API_KEY)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fld", description="fld-engine: annotate images into a Parquet corpus and query it."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="annotate INPUT into a corpus (resumes an interrupted run)"
    )
    run.add_argument(
        "input", help="a folder of images, a .tar (WebDataset) or a glob of them, or a .parquet"
    )
    run.add_argument("--out", required=True, help="corpus folder")
    run.add_argument("--config", help="YAML config (default: the offline ensemble)")
    run.add_argument("--workers", type=int, help="Ray workers (run.workers)")
    run.add_argument(
        "--address", help="join this Ray cluster instead of starting one (run.address)"
    )
    run.add_argument("--shard-size", type=int, help="images per shard (run.shard_size)")
    run.add_argument("--batch-size", type=int, help="images per annotator call (run.batch_size)")
    run.add_argument("--executor", choices=["auto", "ray", "local"], help="run.executor")
    run.add_argument("--iteration", type=int, help="run.iteration")
    run.add_argument(
        "--retry-errors",
        action="store_true",
        help="redo the shards whose images failed to download for a transient reason "
        "(429, 5xx, time-outs), even in a committed iteration, and commit again",
    )
    run.add_argument(
        "--allow-paths-outside",
        action="store_const",
        const=True,
        help="a path list may name files outside its own folder (input.allow_paths_outside)",
    )
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any config key, e.g. filters.nms.iou_threshold=0.6",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=command_run)

    doctor = commands.add_parser(
        "doctor",
        help="check the install: versions against the lock, model weights, each step's model",
    )
    doctor.add_argument(
        "--config", help="YAML config whose steps to check (default: the offline one)"
    )
    doctor.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    doctor.set_defaults(handler=command_doctor)

    verify = commands.add_parser(
        "verify", help="check every file of the committed iterations against what was recorded"
    )
    verify.add_argument("corpus")
    verify.add_argument("--iteration", type=int, help="only this iteration")
    verify.set_defaults(handler=command_verify)

    dedup = commands.add_parser(
        "dedup",
        help="group an iteration's duplicate images again (hashing them if written before hashes)",
    )
    dedup.add_argument("corpus")
    dedup.add_argument("--iteration", type=int, help="default: the latest committed")
    dedup.add_argument(
        "--max-distance", type=int, help="perceptual-hash bits (dedup.max_distance, 6)"
    )
    dedup.add_argument("--quiet", action="store_true", help="no progress bar")
    dedup.set_defaults(handler=command_dedup)

    stats = commands.add_parser("stats", help="label statistics of the committed iterations")
    stats.add_argument("corpus")
    stats.set_defaults(handler=command_stats)

    compact = commands.add_parser(
        "compact",
        help="merge committed iterations' per-shard files into large parts (faster queries)",
    )
    compact.add_argument("corpus")
    compact.add_argument("--iteration", type=int, help="default: every committed iteration")
    compact.add_argument(
        "--target-rows",
        type=int,
        help="rows of the largest table per part (default: run.compact_rows's default)",
    )
    compact.add_argument("--quiet", action="store_true", help="no progress bar")
    compact.set_defaults(handler=command_compact)

    sql = commands.add_parser(
        "sql", help="any SQL over views images, texts, regions, phrases, errors"
    )
    sql.add_argument("corpus")
    sql.add_argument("query")
    sql.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    sql.add_argument("--out", help="write the result to this file (default: standard output)")
    sql.add_argument("--limit", type=int, default=1000, help="rows a table shows (--format table)")
    sql.add_argument(
        "--timeout", type=float, default=300.0, help="seconds before the query is stopped"
    )
    sql.add_argument("--max-width", type=int, default=60, help="truncate cells wider than this")
    sql.set_defaults(handler=command_sql)

    show = commands.add_parser("show", help="draw an image's kept regions to a PNG")
    show.add_argument("corpus")
    show.add_argument("image", help="image_id (or a prefix), URI, or file name")
    show.add_argument("--out", required=True, help="PNG to write")
    show.add_argument("--iteration", type=int, help="default: the latest committed")
    show.add_argument("--all", action="store_true", help="draw dropped rows too")
    show.add_argument(
        "--phrases",
        action="store_true",
        help="draw grounded phrases (boxes and polygons) instead of regions",
    )
    show.set_defaults(handler=command_show)

    export = commands.add_parser(
        "export", help="write an iteration as Florence-2 JSONL, COCO JSON or a YOLO data set"
    )
    export.add_argument("corpus")
    export.add_argument("--format", required=True, choices=["florence2", "coco", "yolo"])
    export.add_argument("--out", required=True, help="folder to create (new or empty)")
    export.add_argument("--iteration", type=int, help="default: the latest committed")
    kept = export.add_mutually_exclusive_group()
    kept.add_argument(
        "--only-kept",
        dest="include_dropped",
        action="store_false",
        help="export kept rows only (the default)",
    )
    kept.add_argument(
        "--include-dropped",
        dest="include_dropped",
        action="store_true",
        help="export dropped rows too (COCO marks them with kept/drop_reason)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export in --out"
    )
    export.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="also export the copies in a duplicate group, not only its representative",
    )
    export.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="yolo: share of images in val.txt, drawn by image_id (default 0.1)",
    )
    export.add_argument(
        "--copy-images",
        action="store_true",
        help="yolo: copy image files into images/ instead of symlinking them",
    )
    export.set_defaults(handler=command_export, include_dropped=False)

    report = commands.add_parser("report", help="write a self-contained HTML report")
    report.add_argument("corpus")
    report.add_argument("--out", required=True, help="HTML file to write")
    report.add_argument("--samples", type=int, default=6, help="images in the gallery (default 6)")
    report.add_argument(
        "--keep-duplicates", action="store_true", help="count copies in duplicate groups too"
    )
    report.set_defaults(handler=command_report)

    refine = commands.add_parser(
        "refine", help="refinement iterations: train a student on kept labels, fuse, filter, commit"
    )
    refine.add_argument("corpus")
    refine.add_argument(
        "--iterations", type=int, required=True, help="run iterations 1..N (those not committed)"
    )
    refine.add_argument("--config", help="YAML config (default: iteration 0's config)")
    refine.add_argument("--workers", type=int, help="Ray workers (run.workers)")
    refine.add_argument("--address", help="join this Ray cluster (run.address)")
    refine.add_argument("--executor", choices=["auto", "ray", "local"], help="run.executor")
    refine.add_argument(
        "--epochs",
        type=int,
        help="student training epochs, whatever its kind (refine.student[.ssd|.florence2].epochs)",
    )
    refine.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override any config key"
    )
    refine.add_argument("--quiet", action="store_true", help="no progress bars")
    refine.add_argument(
        "--accept-worse", action="store_true",
        help="make an iteration the default even when it scores below its parent on the "
        "reviewed hold-out images (also one committed before)",
    )  # fmt: skip
    refine.set_defaults(handler=command_refine)

    review = commands.add_parser(
        "review", help="send the images the ensemble is least sure of to Label Studio for review"
    )
    review.add_argument("corpus")
    review.add_argument("--to", choices=["label-studio"], default="label-studio")
    add_label_studio_arguments(review)
    review.add_argument("--limit", type=int, default=20, help="images to send (default 20)")
    review.add_argument(
        "--sample", choices=["uncertain", "random"], default="uncertain",
        help="uncertain (default): where the ensemble is least sure; random: an unbiased audit",
    )  # fmt: skip
    review.add_argument("--seed", type=int, default=0, help="for --sample random")
    review.add_argument("--iteration", type=int, help="the iteration shown (default: the corpus's default)")  # fmt: skip
    review.add_argument(
        "--holdout", type=float, default=0.5,
        help="share of the sent images kept out of training, to judge iterations (default 0.5)",
    )  # fmt: skip
    review.add_argument(  # the choices are pipelines.review.IMAGE_MODES (not imported: parsing stays light; a unit test compares them)
        "--images", choices=["auto", "url", "presign", "local-files", "inline"], default="auto",
        help="how Label Studio gets the images (default auto: http inputs as they are, s3 "
        "presigned, local files under --document-root served by Label Studio, else inline)",
    )  # fmt: skip
    review.add_argument("--document-root", help="the server's LOCAL_FILES_DOCUMENT_ROOT (--images local-files)")  # fmt: skip
    review.add_argument("--project", type=int, help="add to this project (default: a new one)")
    review.add_argument("--title", help="the new project's title")
    review.set_defaults(handler=command_review)

    import_reviews = commands.add_parser(
        "import-reviews", help="bring finished Label Studio reviews into the reviews table"
    )
    import_reviews.add_argument("corpus")
    import_reviews.add_argument("--from", dest="source", choices=["label-studio"], default="label-studio")  # fmt: skip
    add_label_studio_arguments(import_reviews)
    import_reviews.set_defaults(handler=command_import_reviews)

    train = commands.add_parser(
        "train", help="fine-tune a Florence-2 student on a committed iteration's labels"
    )
    train.add_argument("corpus")
    train.add_argument("--out", required=True, help="folder for the export, checkpoints, model")
    train.add_argument("--iteration", type=int, help="default: the latest committed")
    train.add_argument(
        "--config", help="YAML config whose refine.student.florence2 to use "
        "(default: the iteration's own config)",
    )  # fmt: skip
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override a key, e.g. refine.student.florence2.epochs=1",
    )  # fmt: skip
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=command_train)

    diff = commands.add_parser(
        "diff", help="kept labels added, removed and changed between two iterations"
    )
    diff.add_argument("corpus")
    diff.add_argument("a", type=int, help="iteration A")
    diff.add_argument("b", type=int, help="iteration B")
    diff.set_defaults(handler=command_diff)

    evaluate = commands.add_parser(
        "eval", help="mAP, precision, recall and OCR accuracy against COCO ground truth"
    )
    evaluate.add_argument("corpus")
    evaluate.add_argument("--gt", help="COCO instances JSON; images matched by file name")
    evaluate.add_argument(
        "--reviews", action="store_true",
        help="against people's labels of the reviewed hold-out images instead (printed only)",
    )  # fmt: skip
    evaluate.add_argument("--iteration", type=int, help="default: every committed iteration")
    evaluate.add_argument(
        "--no-write", action="store_true", help="do not store the results in run.json"
    )
    evaluate.set_defaults(handler=command_eval)
    return parser


def describe_os_error(exc: OSError, args: argparse.Namespace) -> str:
    """One line for an OSError: the file it names, else the command's output or corpus
    folder (pyarrow's write errors name no file), and the errno's text ("No space left on
    device", "Read-only file system"), else the error's own words."""
    path = exc.filename or getattr(args, "out", None) or getattr(args, "corpus", None)
    reason = os.strerror(exc.errno) if exc.errno else " ".join(str(exc).split())
    message = f"{path}: {reason}" if path else reason
    if args.command in ("run", "refine"):
        message += " (the shards already written are kept: rerun the same command to resume)"
    elif args.command == "compact":
        message += " (the corpus reads as before: rerun the same command to compact it)"
    return message


def main(argv: list[str] | None = None) -> int:
    apply_offline_env()
    args = build_parser().parse_args(argv)
    from engine.corpus import CorpusError
    from engine.executors import PlacementError, WorkerSetupError
    from engine.label_studio import LabelStudioError
    from engine.sources import InputError
    from engine.storage import StorageError
    from pipelines.config import ConfigError

    try:
        return args.handler(args)
    except (
        ConfigError, CorpusError, InputError, UsageError, FileNotFoundError, PlacementError,
        StorageError, WorkerSetupError, LabelStudioError,
    ) as exc:  # fmt: skip
        print(f"fld {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full or read-only disk, an I/O error: one line, not a traceback
        print(f"fld {args.command}: {describe_os_error(exc, args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
