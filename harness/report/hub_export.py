"""Export a registered adapter as a standard PEFT folder with a Hugging Face model card.

``OUT/adapter_config.json`` and ``OUT/adapter_model.safetensors`` load with plain
``PeftModel.from_pretrained(base, OUT)``; ``OUT/README.md`` is a model card whose
YAML front matter (``base_model``, ``library_name: peft``, ``tags``, ``license``,
``datasets``, ``model-index``) is built with huggingface_hub's ``ModelCardData``
and ``EvalResult``, never by hand. With a run folder the card also holds every
suite result with its confidence interval, the gate verdict rule by rule, and
the limits the gate found (forgetting, hallucination/abstention, bias).

Nothing here loads a model or touches the network: files are copied after
their sha256 is checked against the manifest, and the folder is assembled
beside OUT and renamed into place, so OUT is either the old folder or the
complete new one.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

from ..errors import LafError
from ..io import _umask, check_plain_tree, sha256_file
from ..present import markdown_table, md_code, md_escape
from ..registry import AdapterEntry, Registry

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
DEFAULT_BASE_ID = "google/gemma-3-270m"  # what the `default` model spec is
CONFIDENCE = 0.95
EXPORT_MARK = ".laf-export.json"  # written into every export: --force replaces only a folder that holds it
EXPORT_FILES = {*PEFT_FILES, "README.md", EXPORT_MARK}
# a Hub repository id: owner/name, each 1-96 of letters, digits, '-', '_', '.', not starting or ending with '-' or '.',
# no '--' or '..' (huggingface_hub.utils.validate_repo_id's rule)
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(rf"^{_HUB_PART}/{_HUB_PART}$")
LICENSE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
LIMIT_KIND = {"general": "forgetting (general capability)", "hallucination": "hallucination / abstention", "bias": "bias", "domain": "domain skill"}


@dataclass
class RunEvidence:
    """What a finished evaluation says about one adapter: its results document and the gate verdict on it (if any)."""

    folder: Path
    results: dict
    verdict: dict | None
    verdict_file: Path | None


@dataclass
class ExportResult:
    ref: str
    out: Path
    files: dict[str, int]  # name -> bytes
    card: str
    upload_command: str
    upload_python: str
    verdict: str | None = None
    suites: list[str] = field(default_factory=list)


# -- reading a run (the one place that knows where results and verdicts live)


def load_run_evidence(run: str | Path, ref: str) -> RunEvidence:
    """``run`` is a ``laf run`` folder (``RUN/eval/results.json``) or a ``laf eval --out`` folder (``RUN/results.json``)."""
    run = Path(run)
    if not run.is_dir():
        raise LafError(f"run folder not found: {run}", "pass a `laf run` folder (reports/NAME) or a `laf eval --out` folder")
    eval_dir = run / "eval" if (run / "eval" / "results.json").is_file() else run
    if not (eval_dir / "results.json").is_file():
        raise LafError(f"{run} holds no results.json (nor eval/results.json): not a finished evaluation",
                       "pass the folder of a finished `laf run` or `laf eval --out` (re-run an interrupted one to finish it)")
    from ..gate.verdict import read_verdict
    from ..results import load_run

    doc, _ = load_run(eval_dir)  # the integrity check every reader of a run applies: an edited score is never published
    results = doc.to_dict()
    if not isinstance(results, dict) or not all(isinstance(results.get(k), dict) for k in ("models", "suites", "results")):
        raise LafError(f"{eval_dir / 'results.json'} is not a lost-and-found results document", "re-run the evaluation")
    if ref not in results["models"]:
        raise LafError(f"the run {run} did not evaluate {ref} (it has {', '.join(results['models']) or 'no models'})",
                       f"evaluate it first (`laf eval --adapter {ref} ...`), or export without --run")
    verdict, verdict_file = None, None
    candidates = sorted({*run.glob("verdict*.json"), *eval_dir.glob("verdict*.json")})
    suites = {name: list(meta.metrics) for name, meta in doc.suites.items()}
    for path in candidates:
        v = read_verdict(path, suites if path.parent.resolve() == eval_dir.resolve() else None)  # sealed: an edited verdict is refused
        mine = (v.get("candidate") or {}).get("model") == ref
        if mine and (verdict is None or str(v.get("created", "")) > str(verdict.get("created", ""))):
            verdict, verdict_file = v, path
    return RunEvidence(eval_dir, results, verdict, verdict_file)


# -- building the card


def _finite(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise LafError(f"{what} is {x!r}, not a finite number", "re-run the evaluation; results with NaN or infinity cannot be published")
    return float(x)


def _md(s) -> str:
    return md_escape(s)


class _Code(str):
    """A card cell shown as a code span (:func:`md_code` built it: it is not escaped again)."""


def _code(v) -> _Code:
    return _Code(md_code(v))


def _table(columns: list[str], rows: list[list]) -> list[str]:
    """A card table from raw cells, each escaped once (:func:`md_escape`), a :class:`_Code` cell as its code span."""
    cell = lambda c: c if isinstance(c, _Code) else md_escape(str(c))  # noqa: E731
    return markdown_table([md_escape(c) for c in columns], [[cell(c) for c in r] for r in rows], escape=False)


def _opt(v, sign: str = "") -> str:
    """A verdict number (stored as null when it was not finite)."""
    if v is None:
        return "n/a"
    v = _finite(v, "a number in the verdict")
    return f"{v:{sign}.4f}"


def _obj(v) -> dict:
    """A part of an untrusted manifest that should be an object: itself, or {} when it is anything else."""
    return v if isinstance(v, dict) else {}


def _count(v) -> str:
    """A count from a manifest (untrusted): digits grouped when it is an integer, else shown as it is (escaped where it is shown)."""
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str("n/a" if v is None else v)


def _num(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"


def base_model_id(manifest: dict, override: str | None) -> str | None:
    """The Hub id of the base model when it is known (never a local path)."""
    if override:
        return override
    spec = str(_obj(manifest.get("base_model")).get("spec") or "")
    if spec == "default":
        return DEFAULT_BASE_ID
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists() and not spec.endswith(".gguf"):
        return spec  # a hub id such as org/name
    return None


def suite_rows(results: dict, ref: str) -> list[dict]:
    """Every (suite, metric) of this adapter with a normal-approximation CI from the item-level standard error."""
    z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
    rows = []
    for suite, metrics in (results["results"].get(ref) or {}).items():
        meta = results["suites"].get(suite) or {}
        primary = meta.get("primary_metric")
        base = (results["results"].get("base") or {}).get(suite, {})
        for metric in sorted(metrics, key=lambda m: (m != primary, m)):
            r = metrics[metric]
            if not isinstance(r, dict) or r.get("value") is None:
                continue
            value = _finite(r["value"], f"{suite} {metric} of {ref}")
            se = r.get("stderr")
            se = _finite(se, f"{suite} {metric} stderr") if se is not None else None
            b = (base.get(metric) or {}).get("value")
            rows.append({
                "suite": suite, "category": meta.get("category", "?"), "metric": metric, "primary": metric == primary,
                "n": r.get("n"), "value": value, "stderr": se,
                "ci": (value - z * se, value + z * se) if se is not None else None,
                "base": _finite(b, f"{suite} {metric} of base") if b is not None else None,
                "description": meta.get("description") or "", "data_sha256": meta.get("data_sha256"),
                "higher_is_better": ((meta.get("metrics") or {}).get(metric) or {}).get("higher_is_better"),
            })
    return rows


def eval_results(rows: list[dict]):
    from huggingface_hub import EvalResult

    out = []
    for r in rows:
        args = {"n": r["n"], "confidence": CONFIDENCE}
        name = r["metric"]
        if r["ci"] is not None:
            lo, hi = r["ci"]
            args |= {"stderr": round(r["stderr"], 6), "ci_low": round(lo, 6), "ci_high": round(hi, 6)}
            name = f"{r['metric']} ({int(CONFIDENCE * 100)}% CI {lo:.4f} to {hi:.4f}, n={r['n']})"
        if r["base"] is not None:
            args["base_model_value"] = round(r["base"], 6)
        out.append(EvalResult(
            task_type="text-generation", task_name=f"{r['category']} suite",
            dataset_type=r["suite"], dataset_name=r["suite"], dataset_revision=r["data_sha256"],
            metric_type=r["metric"], metric_value=round(r["value"], 6), metric_name=name, metric_args=args,
        ))
    return out


def known_limits(verdict: dict | None) -> list[str]:
    if not verdict:
        return []
    out = []
    for r in verdict["rules"]:
        status = r.get("status")
        if status not in ("fail", "inconclusive"):
            continue
        kind = LIMIT_KIND.get(r.get("category"), r.get("category", "?"))
        how = ("failed" if r.get("required") else "failed (advisory rule)") if status == "fail" else "not established (inconclusive)"
        out.append(f"**{_md(kind)}** -- {_md(r.get('suite'))} {_md(r.get('metric'))} {how}: {_md(r.get('message'))}")
    return out


def _gate_section(verdict: dict, verdict_file: Path | None) -> list[str]:
    pol = verdict.get("policy") or {}
    lines = ["## Release gate", "",
             (f"Verdict: **{_md(str(verdict.get('verdict', '?')).upper())}** against `{_md((verdict.get('baseline') or {}).get('model'))}` "
              f"under policy `{_md(Path(str(pol.get('source', 'inline'))).name)}` at {round(_finite(pol.get('confidence', CONFIDENCE), 'the verdict confidence') * 100)}% confidence "
              f"(paired items; change oriented so that positive is better)."), ""]
    for w in verdict.get("warnings") or []:
        lines += [f"> **Warning:** {_md(w)}", ""]
    rows = []
    for r in verdict["rules"]:
        s = r.get("stats") or {}
        req = "" if r.get("required") else " (advisory)"
        if s:
            cells = [_opt(s.get("base")), _opt(s.get("candidate")),
                     f"{_opt(s.get('improvement'), '+')} ({_opt(s.get('ci_low'), '+')} to {_opt(s.get('ci_high'), '+')})", s.get("n")]
        else:
            cells = ["", "", "", ""]
        rows.append([str(r.get("status")).upper(), f"{r.get('rule')}{req}", r.get("suite"), r.get("metric"), *cells])
    lines += _table(["status", "rule", "suite", "metric", "base", "adapter", "change (CI)", "n"], rows)
    lines.append("")
    for r in verdict["rules"]:
        lines.append(f"- {_md(r.get('rule'))}: {_md(r.get('message'))}")
    lines.append("")
    return lines


def _merge_section(m: dict) -> list[str]:
    """What a merged adapter is: the method, each parent with its version, weight and digest, the method's settings
    (t, density, lambda, ...), and how far the stored LoRA is from the exact merge (a merge has no training data,
    steps or trainable parameters: a trained adapter's fields would read "None examples", "rank None")."""
    raw = m.get("lineage")
    lin: dict = raw if isinstance(raw, dict) else {}
    params = {k: v for k, v in lin["params"].items() if k not in ("method", "weights")} if isinstance(lin.get("params"), dict) else {}
    out: dict = lin["output"] if isinstance(lin.get("output"), dict) else {}
    err: dict = out["relative_error"] if isinstance(out.get("relative_error"), dict) else {}
    lines = ["## Merge", "",
             f"Made by `laf merge` with method **{_md(lin.get('method', '?'))}** from {len(lin.get('parents') or [])} registered adapters "
             f"(no training of its own).", ""]
    parents = []
    for p in lin.get("parents") or []:
        if not isinstance(p, dict):
            continue
        kind = f"merge ({(p.get('lineage') or {}).get('method')})" if isinstance(p.get("lineage"), dict) else (p.get("kind") or "adapter")
        parents.append([_code(p.get("ref")), kind, p.get("rank"), p["weight"] if "weight" in p else "-", _code(p.get("weights_sha256"))])
    lines += _table(["parent", "kind", "rank", "weight", "weights sha256"], parents)
    settings: list[list] = [[k, json.dumps(v, sort_keys=True, default=str)] for k, v in sorted(params.items())]
    if out:
        settings.append(["output rank", f"{out.get('rank')}{' (exact: the stacked parents)' if out.get('exact') else ''}"])
    if err:
        settings.append(["re-factoring error (relative Frobenius, max / mean over modules)", f"{_opt(err.get('max'))} / {_opt(err.get('mean'))}"])
    if m.get("load_note"):
        settings.append(["note", m["load_note"]])
    lines += [""] + _table(["setting", "value"], settings)
    return lines + [""]


def build_card(entry: AdapterEntry, base_id: str | None, license: str, datasets: list[str], evidence: RunEvidence | None,
               out_name: str, repo_id: str, hashes: dict[str, str]) -> tuple[str, list[dict]]:
    from huggingface_hub import ModelCard, ModelCardData

    m = entry.manifest
    cfg = _obj(m.get("config"))
    base = _obj(m.get("base_model"))
    data = _obj(m.get("data"))
    lora = _obj(cfg.get("lora"))
    optim = _obj(cfg.get("optim"))
    ref = str(entry.ref)
    rows = suite_rows(evidence.results, ref) if evidence else []
    verdict = evidence.verdict if evidence else None
    tags = ["peft", "lora", "lost-and-found"] + (["qlora"] if m.get("kind") == "qlora" else [])
    card_data = ModelCardData(
        base_model=base_id, library_name="peft", license=license, tags=tags, datasets=datasets or None, pipeline_tag="text-generation",
        model_name=entry.ref.name, eval_results=eval_results(rows) or None,
    )

    body = [f"# {_md(entry.ref.name)}", "",
            f"A {'QLoRA' if m.get('kind') == 'qlora' else 'LoRA'} adapter exported from the lost-and-found registry as `{_md(ref)}` "
            f"(created {_md(m.get('created'))}). " + (_md(m.get("description")) if m.get("description") else ""), ""]
    body += ["## Base model", "",
             f"- model: {'`' + _md(base_id) + '`' if base_id else 'a local model (' + _md(base.get('kind')) + '; not on the Hub)'}",
             f"- fingerprint (sha256 of its weights, as the registry checks it): `{_md(base.get('fingerprint'))}`",
             f"- trained at precision `{_md((m.get('load') or {}).get('precision'))}`, compute dtype `{_md((m.get('load') or {}).get('compute_dtype'))}`", ""]
    if m.get("kind") == "merge" or isinstance(m.get("lineage"), dict):
        body += _merge_section(m)
    else:
        body += ["## Training data", "",
                 (f"- file `{_md(Path(str(data.get('path', '?'))).name)}` ({_md(data.get('schema'))}, {_md(data.get('file_format'))}): "
                  f"{_md(data.get('examples'))} examples, {_md(data.get('train_examples'))} trained on, {_md(data.get('eval_examples'))} held out, "
                  f"{_md(data.get('dropped'))} dropped, {_md(data.get('truncated'))} truncated"),
                 f"- content sha256 `{_md(data.get('content_sha256'))}` (file sha256 `{_md(data.get('file_sha256'))}`)", ""]
        settings = [
            ("objective", cfg.get("objective", "sft (loss on response tokens only)")),
            ("LoRA rank / alpha / dropout", f"{lora.get('r')} / {lora.get('alpha')} / {lora.get('dropout')}"),
            ("target modules", lora.get("target_modules")),
            ("rsLoRA / DoRA / bias", f"{lora.get('rslora')} / {lora.get('dora')} / {lora.get('bias')}"),
            ("trainable parameters", f"{_count(m.get('trainable_parameters'))} ({m.get('trainable_percent')} % of {_count(m.get('total_parameters'))})"),
            ("max length / packing", f"{cfg.get('max_length')} / {cfg.get('packing')}"),
            ("batch size x grad accumulation", f"{cfg.get('batch_size')} x {cfg.get('grad_accum')}"),
            ("optimizer", f"lr {optim.get('lr')}, {optim.get('scheduler')} schedule, warmup ratio {optim.get('warmup_ratio')}, weight decay {optim.get('weight_decay')}"),
            ("seed", m.get("seed", cfg.get("seed"))),
        ]
        for key in ("beta", "dpo", "orpo", "merge"):
            if key in cfg or key in m:
                settings.append((key, json.dumps(cfg.get(key, m.get(key)), sort_keys=True, default=str)))
        body += ["## Adapter and objective settings", ""] + _table(["setting", "value"], [list(x) for x in settings]) + [""]
        hw = m.get("hardware") or {}
        cost = [
            ("optimizer steps", m.get("steps")),
            ("tokens seen (supervised)", f"{_count(m.get('tokens_seen'))} ({_count(m.get('supervised_tokens_seen'))})"),
            ("training time / wall time", f"{m.get('train_time_s')} s / {m.get('wall_time_s')} s"),
            ("peak memory", f"{m.get('peak_memory_mb')} MB"),
            ("device", f"{(m.get('load') or {}).get('device')} ({hw.get('cpu_count')} CPU cores{', ' + str(hw['gpu']) if hw.get('gpu') else ''})"),
            ("final train / held-out loss", " / ".join("n/a" if x is None else f"{_finite(x, 'a loss in the manifest'):.4f}" for x in (m.get("final_train_loss"), m.get("final_eval_loss")))),
            ("packages", ", ".join(f"{k} {v}" for k, v in (m.get("packages") or {}).items() if k in ("lost-and-found", "torch", "transformers", "peft", "bitsandbytes"))),
        ]
        body += ["## Training cost", ""] + _table(["", ""], [list(x) for x in cost]) + [""]

    if evidence is not None:
        prov = evidence.results.get("provenance") or {}
        load = prov.get("load") or {}
        body += ["## Evaluation", "",
                 (f"Scored by lost-and-found on the same items as the base model (precision `{_md(load.get('precision'))}`, batch size {_md(prov.get('batch_size'))}, "
                  f"max length {_md(prov.get('max_length'))}, {_md(prov.get('time'))}). CI: {int(CONFIDENCE * 100)}% normal interval from the item-level standard error."), ""]
        cells = []
        for r in rows:
            ci = f" ({_num(r['ci'][0])} to {_num(r['ci'][1])})" if r["ci"] else ""
            base_v = _num(r["base"]) if r["base"] is not None else ""
            cells.append([r["suite"], r["category"], f"{r['metric']}{' *' if r['primary'] else ''}", r["n"], base_v, f"{_num(r['value'])}{ci}"])
        body += _table(["suite", "category", "metric", "n", "base", "this adapter (CI)"], cells)
        body += ["", "`*` the suite's primary metric.", ""]
        if verdict is not None:
            body += _gate_section(verdict, evidence.verdict_file)
        else:
            body += ["No gate verdict for this adapter was found in the run folder.", ""]
        limits = known_limits(verdict)
        body += ["## Known limits", ""]
        body += [f"- {x}" for x in limits] if limits else (["No gate rule failed or stayed inconclusive."] if verdict else ["Not assessed: the run has no gate verdict for this adapter."])
        body.append("")
    else:
        body += ["## Evaluation", "", "Not included: export with `--run RUN` to add suite results, the gate verdict and known limits.", ""]

    load_base = base_id or "PATH/TO/BASE/MODEL"
    body += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM", "from peft import PeftModel", "",
             f'base = AutoModelForCausalLM.from_pretrained("{load_base}")', f'model = PeftModel.from_pretrained(base, "{repo_id}")', "```", "",
             "## Publish", "", "```bash", upload_command(repo_id, out_name), "```", "",
             "or from Python:", "", "```python", upload_python(repo_id, out_name), "```", ""]
    body += ["## Files", ""] + _table(["file", "sha256"], [[f, _code(hashes[f])] for f in PEFT_FILES]) + [""]
    text = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(body)
    ModelCard(text)  # parses the front matter back (raises on invalid metadata)
    return text, rows


def upload_command(repo_id: str, out: str) -> str:
    """The shell command printed and written into the card: every argument quoted, so a copied command runs as shown."""
    return shlex.join(["hf", "upload", check_hub_id(repo_id, "--repo-id"), out, "."])


def upload_python(repo_id: str, out: str) -> str:
    return (f"import huggingface_hub; huggingface_hub.upload_folder(repo_id={json.dumps(check_hub_id(repo_id, '--repo-id'))}, "
            f"folder_path={json.dumps(out)}, repo_type=\"model\")")


def check_hub_id(value: str, what: str) -> str:
    """A Hub repository id (``owner/name``) or a ``LafError``: it is printed into commands and the card."""
    if not isinstance(value, str) or not HUB_ID.fullmatch(value) or "--" in value or ".." in value or value.endswith(".git"):
        raise LafError(f"{what} {value!r} is not a Hugging Face repository id",
                       "write OWNER/NAME with letters, digits, '-', '_' and '.' only (e.g. my-org/support-bot)")
    return value


def check_card_text(value: str, what: str, pattern: re.Pattern | None = None) -> str:
    """A short single-line value for the card's metadata: no newline or control character (they would forge front matter)."""
    if not isinstance(value, str) or not value or len(value) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in value) or (pattern and not pattern.fullmatch(value)):
        raise LafError(f"{what} {value!r} is not allowed in a model card",
                       "use a plain id without newlines or control characters (a license such as apache-2.0, a Hub id such as org/name)")
    return value


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or below it (both resolved)."""
    return a == b or b in a.parents


# -- the export


def _check_target(out: Path, reg: Registry, run: Path | None) -> None:
    """OUT never overlaps what the export reads or what others own: not inside (or containing) the registry, the
    source version or the run folder, --force or not (replacing it would delete adapters or results)."""
    try:
        target = out.resolve()
        protected = [("the registry", reg.root.resolve())] + ([("the run folder", run.resolve())] if run is not None else [])
    except (OSError, RuntimeError) as e:
        raise LafError(f"cannot resolve {out}: {e}", "choose another OUT folder") from None
    for what, p in protected:
        if _inside(target, p) or _inside(p, target):
            where = "is inside" if _inside(target, p) and target != p else ("is" if target == p else "contains")
            raise LafError(f"export target {out} {where} {what} ({p}); exporting there would replace files it holds",
                           "choose an OUT folder outside the registry and the run folder")
    if target == Path.cwd().resolve() or target == Path.home().resolve() or target.parent == target:
        raise LafError(f"export target {out} is the current, home or root folder", "choose a new OUT folder for the export")


def _check_out(out: Path, force: bool) -> None:
    if out.is_symlink():
        raise LafError(f"{out} is a symlink", "choose an OUT folder that is not a link")
    if out.exists() and not out.is_dir():
        raise LafError(f"{out} exists and is not a folder", "choose another OUT folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise LafError(f"{out} already exists and is not empty", "choose another OUT folder, or pass --force to replace it")
        names = {p.name for p in out.iterdir()}
        if EXPORT_MARK not in names or not names <= EXPORT_FILES or any(not p.is_file() or p.is_symlink() for p in out.iterdir()):
            raise LafError(f"{out} is not a previous export (it holds {', '.join(sorted(names)[:8])}); --force replaces only a folder `laf registry export` wrote",
                           "choose another OUT folder, or empty this one yourself if you mean to")


def export_adapter(registry: Registry | str, ref: str, out: str | Path, run: str | Path | None = None, *, force: bool = False,
                   license: str | None = None, base_model: str | None = None, datasets: list[str] | None = None,
                   repo_id: str | None = None) -> ExportResult:
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    if repo_id is not None:
        check_hub_id(repo_id, "--repo-id")
    if license is not None:
        check_card_text(license, "--license", LICENSE_ID)
    if base_model is not None:
        check_card_text(base_model, "--base-model", HUB_ID)
    for d in datasets or []:
        check_card_text(d, "--dataset", HUB_ID)
    out = Path(out)
    _check_target(out, reg, Path(run) if run is not None else None)
    entry = reg.resolve(ref)
    check_plain_tree(entry.path, f"{entry.ref}: its version folder", "remove the links or retrain the adapter")
    check = reg.verify(entry.ref)
    if not check.ok:
        raise LafError(f"{entry.ref} does not match its manifest (changed: {check.mismatched or '-'}, missing: {check.missing or '-'}); it will not be exported",
                       f"run `laf registry verify {entry.ref}` and retrain or restore the adapter")
    missing = [f for f in PEFT_FILES if not (entry.path / f).is_file()]
    if missing:
        raise LafError(f"{entry.ref} has no {', '.join(missing)}: not a PEFT adapter folder", "export an adapter trained or merged by lost-and-found")
    try:
        peft_cfg = json.loads((entry.path / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise LafError(f"{entry.path / 'adapter_config.json'} is unreadable: {e}", f"run `laf registry verify {entry.ref}`") from e
    if not isinstance(peft_cfg, dict) or "peft_type" not in peft_cfg:
        raise LafError(f"{entry.path / 'adapter_config.json'} is not a PEFT adapter config (no peft_type)", "export an adapter trained by lost-and-found")
    _check_out(out, force)
    evidence = load_run_evidence(run, str(entry.ref)) if run is not None else None
    if evidence is not None:
        weights = ((evidence.results["models"][str(entry.ref)] or {}).get("adapter") or {}).get("weights_sha256")
        if weights and weights != _obj(entry.manifest.get("files")).get("adapter_model.safetensors"):
            raise LafError(f"the run {run} scored other weights under the name {entry.ref} (weights sha256 {str(weights)[:12]}... vs the registry's)",
                           "pass the run that evaluated this registry's adapter (the registry may have been rebuilt)")
    base_id = base_model_id(entry.manifest, base_model)
    if base_id is not None and not HUB_ID.fullmatch(base_id):
        base_id = None  # a manifest's spec that is not a clean Hub id is never printed into the card
    license = license or _obj(entry.manifest.get("config")).get("license") or "other"
    if not isinstance(license, str) or not LICENSE_ID.fullmatch(license):
        license = "other"
    repo_id = repo_id or f"YOUR-USER/{entry.ref.name}"
    check_hub_id(repo_id, "--repo-id")

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as e:
        raise LafError(f"cannot write beside {out}: {e.strerror or e}", "choose a writable OUT folder") from e
    old = None
    try:
        if base_id and peft_cfg.get("base_model_name_or_path") != base_id:
            # a local path would mean nothing to whoever downloads the adapter
            (tmp / "adapter_config.json").write_text(json.dumps(peft_cfg | {"base_model_name_or_path": base_id}, indent=2, sort_keys=True) + "\n")
        else:
            shutil.copyfile(entry.path / "adapter_config.json", tmp / "adapter_config.json")
        shutil.copyfile(entry.path / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
        hashes = {f: sha256_file(tmp / f) for f in PEFT_FILES}
        if hashes["adapter_model.safetensors"] != _obj(entry.manifest.get("files")).get("adapter_model.safetensors"):
            raise LafError(f"{entry.ref}'s weights changed while they were copied", "run the export again")
        try:
            card, rows = build_card(entry, base_id, license, list(datasets or []), evidence, str(out), repo_id, hashes)
        except ValueError as e:  # huggingface_hub refused the metadata
            raise LafError(f"the model card metadata for {entry.ref} does not validate: {e}", "check --license, --base-model and --dataset") from e
        except (TypeError, KeyError, AttributeError, IndexError) as e:  # a manifest or run field of an unexpected shape
            raise LafError(f"{entry.ref}'s manifest or the run's documents hold a field of an unexpected shape ({type(e).__name__}: {e})",
                           f"run `laf registry verify {entry.ref}`; retrain or re-run the evaluation") from None
        (tmp / "README.md").write_text(card, encoding="utf-8")
        (tmp / EXPORT_MARK).write_text(json.dumps({"ref": str(entry.ref), "weights_sha256": hashes["adapter_model.safetensors"]}) + "\n")
        os.chmod(tmp, 0o777 & ~_umask())
        _check_out(out, force)  # again: another writer may have filled it meanwhile
        if out.is_dir():
            if any(out.iterdir()):
                old = out.parent / f".{out.name}.replaced-{os.getpid()}"
                os.rename(out, old)
            else:
                out.rmdir()
        os.rename(tmp, out)
    except OSError as e:
        if old is not None and not out.exists():
            os.rename(old, out)  # put the previous export back
            old = None
        raise LafError(f"writing {out} failed: {e.strerror or e}; nothing was changed", "free disk space or fix permissions, then retry") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    return ExportResult(str(entry.ref), out, files, card, upload_command(repo_id, str(out)), upload_python(repo_id, str(out)),
                        verdict=(evidence.verdict or {}).get("verdict") if evidence else None, suites=sorted({r["suite"] for r in rows}))
