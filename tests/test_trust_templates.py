"""Suite files never run code: templates are checked before anything runs and rendered in a sandbox (issue 18, item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.errors import ConfigError
from harness.suites.templates import check_templates, install_sandbox
from tests.conftest import assert_clean_error, run_cli

ISSUE_PAYLOAD = "{{ cycler.__init__.__globals__.os.popen('id > pwned.txt').read() }}{{q}}"


def refused(result, *needles: str) -> None:
    """exit 3, no traceback, every needle in what was printed (`suites validate` lists problems on stdout)."""
    code, out, err = result
    text = " ".join((out + err).split())
    assert code == 3 and "Traceback" not in text, (code, out, err)
    for n in needles:
        assert " ".join(n.split()) in text, text


def write_suite(folder: Path, task_overrides: dict, name: str = "s", rows: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows or [{"q": f"What is {i}?", "choices": ["a", "b", "c"], "gold": i % 3} for i in range(6)]
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"output_type": "multiple_choice", "doc_to_text": "{{q}}", "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}", **task_overrides}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({"category": "general", "data": {"path": f"{name}.jsonl"}, "task": task}))
    return folder / f"{name}.yaml"


def test_issue_example_is_refused_by_validate_and_eval_and_runs_nothing(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = write_suite(tmp_path / "suites", {"doc_to_text": ISSUE_PAYLOAD})
    refused(run_cli("suites", "validate", str(suite)), "doc_to_text", "__globals__", str(suite))
    assert_clean_error(run_cli("eval", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(tmp_path / "o"),
                               "--cache", str(tmp_path / "c.sqlite"), "--quiet"), "doc_to_text", "__globals__")
    assert not (tmp_path / "pwned.txt").exists()
    assert not (tmp_path / "o" / "results.json").exists()


# members of the family we thought of: other fields, other routes to Python internals
MEMBERS = [
    ({"doc_to_target": "{{ gold.__class__.__mro__ }}"}, "doc_to_target", "names starting with '_'"),
    ({"doc_to_choice": "{{ choices|attr('__class__') }}"}, "doc_to_choice", "attr"),
    ({"doc_to_text": "{{ q['__class__'] }}"}, "doc_to_text", "__class__"),
    ({"doc_to_text": "{{ lipsum.__globals__['os'] }}{{q}}"}, "doc_to_text", "__globals__"),
    ({"doc_to_text": "{{ joiner() }}{{q}}"}, "doc_to_text", "joiner"),
    ({"doc_to_text": "{% set n = namespace() %}{{q}}"}, "doc_to_text", "namespace"),
    ({"doc_to_text": "{{ self._TemplateReference__context }}"}, "doc_to_text", "_TemplateReference__context"),
    ({"gen_prefix": "{{ q.__init__ }}"}, "gen_prefix", "__init__"),
    ({"fewshot_config": {"doc_to_text": "{{ q.__doc__ }}"}}, "fewshot_config.doc_to_text", "__doc__"),
    ({"doc_to_text": "{{ q "}, "doc_to_text", "not a valid Jinja template"),
]


@pytest.mark.parametrize("override,key,needle", MEMBERS, ids=[m[1] + ":" + m[2] for m in MEMBERS])
def test_unsafe_template_members_are_refused_naming_the_key(tmp_path, override, key, needle):
    suite = write_suite(tmp_path, override)
    refused(run_cli("suites", "validate", str(suite)), f"task.{key}", needle)


def test_the_sandbox_stops_what_slips_past_the_static_check(tmp_path):
    """A dunder name built at run time passes the parse-time check; lm-eval's renderer (now sandboxed) refuses it."""
    import jinja2
    import lm_eval.utils as lu

    install_sandbox()
    sneaky = "{{ q[('_' ~ '_cl' ~ 'ass__')] }}"
    check_templates({"doc_to_text": sneaky}, "x.yaml")  # static check: only constant names are visible
    with pytest.raises(jinja2.TemplateError):
        lu.apply_template(sneaky, {"q": "x"})
    with pytest.raises(jinja2.TemplateError):  # immutable: documents cannot be changed from a template
        lu.apply_template("{{ choices.append('z') }}", {"choices": ["a"]})
    with pytest.raises(jinja2.UndefinedError):  # undefined variables are errors, never empty text
        lu.apply_template("{{ missing }}", {"q": "x"})
    assert lu.apply_template("{{ q|upper }} {{ choices|join(', ') }} {{ q|regex_replace('x', 'y') }}", {"q": "x", "choices": ["a", "b"]}) == "X a, b y"


def test_the_sandbox_compiles_each_template_once_and_still_refuses_on_every_render():
    """lm-eval calls ``from_string`` for every field of every item: each distinct source is compiled once, bounded,
    and a cached template is the same sandboxed template (refused on its second render as on its first)."""
    import jinja2
    import lm_eval.utils as lu

    from harness.suites.templates import SANDBOX

    install_sandbox()
    SANDBOX._compiled.clear()
    a, b = SANDBOX.from_string("{{ q }}!"), SANDBOX.from_string("{{ q }}!")
    assert a is b and a.render(q="x") == "x!" and b.render(q="y") == "y!"  # renders only what it is given
    assert lu.apply_template("{{ q }}!", {"q": "z"}) == "z!" and len(SANDBOX._compiled) == 1
    sneaky = "{{ q[('_' ~ '_cl' ~ 'ass__')] }}"
    for _ in range(2):
        with pytest.raises(jinja2.TemplateError):
            lu.apply_template(sneaky, {"q": "x"})
    long = "{{ q }}" + " " * SANDBOX.COMPILED_CHARS
    assert SANDBOX.from_string(long) is not SANDBOX.from_string(long)  # too long to keep: compiled each time
    for i in range(SANDBOX.COMPILED_MAX + 50):
        assert SANDBOX.from_string(f"{{{{ q }}}}{i}").render(q="v") == f"v{i}"
    assert len(SANDBOX._compiled) == SANDBOX.COMPILED_MAX  # bounded: the oldest go first
    assert "{{ q }}!" not in SANDBOX._compiled and f"{{{{ q }}}}{SANDBOX.COMPILED_MAX + 49}" in SANDBOX._compiled
    strict = SANDBOX.overlay(keep_trailing_newline=False)  # an overlay's settings differ: it keeps its own templates
    assert strict._compiled is not SANDBOX._compiled and strict.from_string("{{ q }}\n").render(q="v") == "v"
    assert SANDBOX.from_string("{{ q }}\n").render(q="v") == "v\n"


def test_static_check_allows_ordinary_templates():
    for t in ["{{q}}", "Question: {{question}}\nAnswer:", "{{ choices[gold] }}", "{% for c in choices %}{{ loop.index }}. {{c}}\n{% endfor %}",
              "{{ text.split(' ')[:5]|join(' ') }}", "{{ 'yes' if label == 1 else 'no' }}"]:
        check_templates({"doc_to_text": t}, "x.yaml")
    with pytest.raises(ConfigError):
        check_templates({"doc_to_text": "{{ ''.__class__ }}"}, "x.yaml")


def test_a_user_suite_shadowing_a_builtin_is_marked_and_recorded(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAF_SUITES", raising=False)
    shadow = write_suite(tmp_path / "suites" / "general", {}, name="world-facts")
    code, out, err = run_cli("suites", "list", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    src = rows["general/world-facts"]["source"]
    assert src.startswith("yours: ") and src.endswith(" (replaces the built-in)") and "world-facts.yaml" in src
    assert rows["general/text"]["source"] == "built-in"
    code, out, err = run_cli("suites", "list")
    assert code == 0 and "replaces" in out
    code, out, err = run_cli("eval", "--model", str(tiny_model_dir), "--suite", "general/world-facts", "--out", str(tmp_path / "o"),
                             "--cache", str(tmp_path / "c.sqlite"), "--batch-size", "4")
    assert code == 0, err
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert Path(doc["suites"]["general/world-facts"]["file"]).resolve() == shadow.resolve()
    assert doc["suites"]["general/world-facts"]["n_docs"] == 6
    assert "replaces the built-in" in " ".join((out + err).split())
