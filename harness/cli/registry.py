"""``laf registry list|show|verify|export``."""

from __future__ import annotations

import argparse

from .. import defaults
from .output import add_format, console, err_console, print_json, show


def register(sub) -> None:
    p = sub.add_parser("registry", help="list, show, verify and export registered adapters")
    p.add_argument("--registry", default=defaults.REGISTRY, help=f"registry folder (default: {defaults.REGISTRY}); also accepted after ACTION")
    rs = p.add_subparsers(dest="registry_command", metavar="ACTION")
    rs.required = True
    _add_parser = rs.add_parser

    def add_parser(*a, **kw):  # every action also takes --registry after its name (laf registry list --registry R)
        sp = _add_parser(*a, **kw)
        sp.add_argument("--registry", default=argparse.SUPPRESS, help="registry folder (same as before ACTION)")
        return sp

    rs.add_parser = add_parser
    ls = rs.add_parser("list", help="every adapter version (broken ones listed with the reason)")
    add_format(ls, "every version as a JSON list (broken ones with the reason)")
    ls.set_defaults(handler=cmd_list)
    show = rs.add_parser("show", help="one adapter's manifest")
    show.add_argument("ref", metavar="NAME[@VERSION]")
    add_format(show, "the manifest and the version's path")
    show.set_defaults(handler=cmd_show)
    verify = rs.add_parser("verify", help="recompute every file's sha256; exit 1 on any mismatch")
    verify.add_argument("ref", metavar="NAME[@VERSION]")
    add_format(verify, "{ref, ok, files_ok, manifest, mismatched, missing, unexpected}")
    verify.set_defaults(handler=cmd_verify)
    ex = rs.add_parser("export", help="write a standard PEFT folder with a Hugging Face model card (README.md) for publishing",
                       description="OUT gets adapter_config.json + adapter_model.safetensors (plain PeftModel.from_pretrained loads them) and a "
                       "model card; with --run, the card holds every suite result with its CI, the gate verdict and the known limits. Nothing is uploaded.")
    ex.add_argument("ref", metavar="NAME[@VERSION]")
    ex.add_argument("out", metavar="OUT", help="folder to create (refused if it exists and is not empty, unless --force)")
    ex.add_argument("--run", default=None, metavar="RUN", help="a `laf run` folder or `laf eval --out` folder that evaluated this adapter")
    ex.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    ex.add_argument("--license", default=None, help="license id for the card (default: the training config's license, else 'other')")
    ex.add_argument("--base-model", default=None, metavar="HUB_ID", help="the base model's Hub id when the adapter was trained on a local copy")
    ex.add_argument("--dataset", dest="datasets", action="append", default=[], metavar="HUB_ID", help="a Hub dataset the training data came from (repeatable)")
    ex.add_argument("--repo-id", default=None, metavar="USER/NAME", help="the Hub repository for the upload command shown (default YOUR-USER/NAME)")
    add_format(ex, "the exported files, the card's suites and verdict, and the upload commands")
    ex.set_defaults(handler=cmd_export)


def _registry(args):
    from ..registry import Registry

    return Registry(args.registry)


def cmd_list(args) -> int:
    from rich.markup import escape

    from .rows import registry_rows

    entries, broken = _registry(args).scan()
    rows = [
        {
            "ref": str(e.ref),
            "created": e.manifest.get("created"),
            "base": (e.manifest.get("base_model") or {}).get("spec"),
            "kind": e.manifest.get("kind"),
            "steps": e.manifest.get("steps"),
            "final_eval_loss": e.manifest.get("final_eval_loss"),
            "path": str(e.path),
        }
        for e in entries
    ]
    rows += [{"ref": ref, "broken": reason} for ref, reason in broken]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        console.print(f"no adapters in {args.registry}", markup=False)
        return 0
    show(registry_rows(rows), args)
    for ref, reason in broken:
        err_console.print(f"[red]broken[/] {escape(ref)}: {escape(reason)}", soft_wrap=True)
    return 0


def _n(x) -> str:
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else str(x)


def cmd_show(args) -> int:
    from rich.markup import escape

    entry = _registry(args).resolve(args.ref)
    if args.json:
        print_json({"path": str(entry.path), **entry.manifest})
        return 0
    m = entry.manifest

    def line(text: str) -> None:  # manifest text is data: a "[/bold]" in it is printed, never read as markup
        console.print(text, markup=False)

    console.print(f"[bold]{escape(entry.describe(args.ref))}[/]  {escape(str(entry.path))}")
    base = m.get("base_model") if isinstance(m.get("base_model"), dict) else {}
    line(f"  base         {base.get('spec')}  sha256:{base.get('fingerprint')}")
    line(f"  load         {m.get('load')}")
    files = m.get("files") if isinstance(m.get("files"), dict) else {}
    if m.get("lineage"):  # a merged adapter (laf merge): its family tree instead of training facts
        from ..merge import family_tree

        for tree_line in family_tree(str(entry.ref), m, _registry(args)):
            line(f"  {tree_line}")
        for name, digest in files.items():
            line(f"  file         {name}  {str(digest)[:16]}...")
        return 0
    d = m.get("data") if isinstance(m.get("data"), dict) else {}
    line(f"  data         {d.get('path')} ({d.get('examples')} examples, {d.get('dropped')} dropped) sha256:{d.get('content_sha256')}")
    line(f"  trainable    {_n(m.get('trainable_parameters'))} ({m.get('trainable_percent')} %)")
    line(f"  steps/tokens {m.get('steps')} / {_n(m.get('tokens_seen'))}")
    line(f"  losses       train {m.get('final_train_loss')}  eval {m.get('final_eval_loss')}")
    line(f"  time/memory  {m.get('train_time_s')} s / {m.get('peak_memory_mb')} MB")
    for name, digest in files.items():
        line(f"  file         {name}  {str(digest)[:16]}...")
    return 0


def cmd_verify(args) -> int:
    from rich.markup import escape

    res = _registry(args).verify(args.ref)
    # a version registered before manifests carried their own digest still loads, but verify cannot vouch for its
    # manifest (base fingerprint, losses, file list): exit 1 with the reason (documented in docs/concepts.md, "Registry integrity")
    ok = res.ok and res.manifest == "ok"
    if args.json:
        print_json({"ref": str(res.ref), "ok": ok, "files_ok": res.ok, "manifest": res.manifest,
                    "mismatched": res.mismatched, "missing": res.missing, "unexpected": res.unexpected})
        return 0 if ok else 1
    shown = escape(str(res.ref) if args.ref.strip() == str(res.ref) else f"{args.ref.strip()} -> {res.ref}")
    if ok:
        console.print(f"[green]ok[/] {shown}: every file matches its manifest sha256 and the manifest matches its own digest", soft_wrap=True)
        return 0
    if res.ok and res.manifest == "not covered":
        console.print(f"[yellow]NOT COVERED[/] {escape(str(res.ref))}: every file matches its manifest, but the manifest is not covered "
                      "(registered before manifests carried their own digest), so edits to it cannot be detected; "
                      "re-register or retrain to cover it", soft_wrap=True)
        return 1
    console.print(f"[red]FAILED[/] {shown}")
    for label, items in (("changed", res.mismatched), ("missing", res.missing), ("not in manifest", res.unexpected)):
        for i in items:  # file names come from the manifest and the folder: printed as they are, never as markup
            console.print(f"  {label}: {i}", markup=False)
    return 1


def cmd_export(args) -> int:
    from rich.markup import escape

    from ..report.hub_export import export_adapter

    res = export_adapter(_registry(args), args.ref, args.out, args.run, force=args.force, license=args.license,
                         base_model=args.base_model, datasets=args.datasets, repo_id=args.repo_id)
    if args.json:
        print_json({"ref": res.ref, "out": str(res.out), "files": res.files, "verdict": res.verdict, "suites": res.suites,
                    "upload_command": res.upload_command, "upload_python": res.upload_python})
        return 0
    shown = res.ref if args.ref.strip() == res.ref else f"{args.ref.strip()} -> {res.ref}"
    console.print(f"[bold green]exported[/] {escape(shown)}  ->  {escape(str(res.out))}")
    for name, size in res.files.items():
        console.print(f"  {escape(name):28} {size:>12,} bytes")
    if res.suites:
        console.print(f"  card: {len(res.suites)} suites in model-index" + (f", gate verdict {res.verdict.upper()}" if res.verdict else ", no gate verdict"))
    console.print("publish (not done here):")
    console.print(f"  {escape(res.upload_command)}")
    console.print(f"  {escape(res.upload_python)}", soft_wrap=True)
    return 0
