"""``laf history migrate|list|show|export`` and ``laf release``: the release history (``harness/history/``)."""

from __future__ import annotations

from .. import defaults
from .argtypes import int_range, output_file_flags
from .output import add_format, console, print_json, show

HISTORY_HELP = f"the history: a SQLite path, sqlite:///PATH or postgresql://...; default: LAF_HISTORY_URL, else {defaults.HISTORY}"


def register(sub) -> None:
    h = sub.add_parser("history", help="the release history: every gate, comparison and run recorded; trends across versions")
    hs = h.add_subparsers(dest="history_command", metavar="ACTION")
    hs.required = True

    m = hs.add_parser("migrate", help="create or upgrade the history's schema to this laf's version")
    m.add_argument("--history", default=None, metavar="URL", help=HISTORY_HELP)
    add_format(m, "{store, before, after, head} (schema revisions)")
    m.set_defaults(handler=cmd_migrate)

    ls = hs.add_parser("list", help="recorded runs, newest first (one row per candidate)")
    ls.add_argument("name", nargs="?", default=None, help="only this adapter name")
    ls.add_argument("--limit", type=int_range(1, 100_000), default=50, metavar="N", help="at most N rows (default 50)")
    ls.add_argument("--history", default=None, metavar="URL", help=HISTORY_HELP)
    add_format(ls, "{store, runs}")
    ls.set_defaults(handler=cmd_list)

    sh = hs.add_parser("show", help="an adapter's trend: each version's metrics with CIs, released versions marked, the verdict each got")
    sh.add_argument("name", help="adapter name (without @version)")
    sh.add_argument("--suite", default=None, help="only this suite")
    sh.add_argument("--history", default=None, metavar="URL", help=HISTORY_HELP)
    add_format(sh, "the trend document (laf.trend/1)")
    sh.set_defaults(handler=cmd_show)

    ex = hs.add_parser("export", help="the whole history as Parquet or CSV (one row per run, model and suite), or into an MLflow tracking store")
    ex.add_argument("--format", choices=["parquet", "csv"], default=None, help="file format (default: from -o's suffix)")
    output_file_flags(ex, "the Parquet or CSV file", "no default: pass it, or --mlflow")
    ex.add_argument("--mlflow", default=None, metavar="URI", help="log every recorded run into this MLflow tracking store (needs the 'mlflow' extra)")
    ex.add_argument("--experiment", default="lost-and-found", help="MLflow experiment name (default: lost-and-found)")
    ex.add_argument("--history", default=None, metavar="URL", help=HISTORY_HELP)
    add_format(ex, "what was written (file rows, MLflow runs)", format_flag=False)
    ex.set_defaults(handler=cmd_export)

    r = sub.add_parser("release", help="mark a recorded adapter version as released (who, when, commit); `laf gate --baseline released` gates against it")
    r.add_argument("ref", metavar="NAME@V", help="the version (NAME or NAME@latest: its newest recorded version)")
    r.add_argument("--note", default=None, help="a release note")
    r.add_argument("--history", default=None, metavar="URL", help=HISTORY_HELP)
    add_format(r, "the release record")
    r.set_defaults(handler=cmd_release)


def _url(args) -> str:
    from ..errors import LafError
    from ..history import resolve_url

    url = resolve_url(args.history)
    if url is None:
        raise LafError("the release history is switched off (LAF_HISTORY_URL=off)", "pass --history URL")
    return url


def cmd_migrate(args) -> int:
    from ..history import HistoryStore
    from ..history.store import _known_revisions

    with HistoryStore(_url(args), write=True, upgrade=True) as store:
        doc = {"store": store.shown, "before": store.found_revision, "after": store.revision, "head": _known_revisions()[1]}
    if args.json:
        print_json(doc)
    else:
        before, after = doc["before"], doc["after"]
        console.print(f"{doc['store']}: schema {before or '(new)'} -> {after}" if before != after else f"{doc['store']}: schema {after} (up to date)")
    return 0


def cmd_list(args) -> int:
    from rich.markup import escape

    from ..history import HistoryStore
    from .rows import history_runs_rows

    with HistoryStore(_url(args)) as store:
        rows = store.runs(args.name, args.limit)
        shown = store.shown
    if args.json:
        print_json({"store": shown, "runs": rows})
        return 0
    console.print(f"{escape(shown)}: {len(rows)} row(s)")
    show(history_runs_rows(rows), args)
    return 0


def cmd_show(args) -> int:
    from rich.markup import escape

    from ..history import HistoryStore
    from .rows import trend_rows

    with HistoryStore(_url(args)) as store:
        doc = store.trend(args.name, args.suite)
    if args.json:
        print_json(doc)
        return 0
    if not doc["versions"]:
        console.print(f"{escape(doc['store'])}: nothing recorded for {escape(args.name)}")
        return 0
    console.print(f"{escape(doc['store'])}: {escape(args.name)}, {len(doc['versions'])} version(s); metric value (95% CI) per suite")
    show(trend_rows(doc), args)
    return 0


def cmd_export(args) -> int:
    from ..errors import LafError
    from ..history import HistoryStore
    from ..history.export import export_file, export_mlflow

    if not args.output and not args.mlflow:
        raise LafError("nothing to export to", "pass -o FILE (with --format parquet|csv) and/or --mlflow URI")
    doc: dict = {}
    with HistoryStore(_url(args)) as store:
        doc["store"] = store.shown
        if args.output:
            doc["file"] = export_file(store, args.output, args.format)
        if args.mlflow:
            doc["mlflow"] = export_mlflow(store, args.mlflow, args.experiment)
    if args.json:
        print_json(doc)
        return 0
    if "file" in doc:
        console.print(f"{doc['file']['rows']} row(s) -> {doc['file']['path']} ({doc['file']['format']})")
    if "mlflow" in doc:
        m = doc["mlflow"]
        console.print(f"MLflow {m['tracking_uri']}: {m['logged']} run(s) logged, {m['skipped']} already there (experiment {m['experiment']})")
    return 0


def cmd_release(args) -> int:
    from ..env import now_iso
    from ..history import HistoryStore, git_commit, who

    with HistoryStore(_url(args), write=True, create=False) as store:  # a release needs a recorded run: never creates a store
        rel = store.release(args.ref, who(), now_iso(precise=True), git_commit(), args.note)
        rel["store"] = store.shown
    if args.json:
        print_json(rel)
        return 0
    from rich.markup import escape

    if rel["already"]:
        console.print(f"{escape(rel['candidate'])} was already released on {escape(str(rel['released_at']))} by {escape(str(rel['released_by']))}")
    else:
        console.print(f"released {escape(rel['candidate'])} ({escape(str(rel['released_at']))}, by {escape(str(rel['released_by']))}, commit "
                      f"{escape(str(rel.get('git_commit') or '-'))}) in {escape(rel['store'])}")
    return 0
