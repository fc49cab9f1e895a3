"""Suite templates are data, never code: every Jinja template lm-eval renders runs in a sandbox.

lm-eval renders ``doc_to_text``, ``doc_to_target``, ``doc_to_choice``,
``gen_prefix`` (and the few-shot copies of them) with one module-level Jinja
``Environment`` (``lm_eval.utils.env``, used by ``apply_template``), which is
not sandboxed: ``{{ cycler.__init__.__globals__.os.popen('id').read() }}`` in a
suite file runs a shell command. :func:`install_sandbox` replaces that
environment with an :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`
(no attribute starting with ``_``, no mutation of documents, undefined
variables are errors), so even a template that slips past validation cannot
reach Python internals. :func:`check_templates` refuses such a template before
anything runs, naming the file and the key: attribute or item access to a name
starting with ``_``, the ``attr`` filter, and the globals that only serve
to reach objects (``cycler``, ``joiner``, ``namespace``, ``lipsum``,
``self``).
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from jinja2 import BaseLoader, StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import ConfigError

FORBIDDEN_NAMES = frozenset({"cycler", "joiner", "namespace", "lipsum", "self"})
FORBIDDEN_FILTERS = frozenset({"attr"})


def _regex_replace(string, pattern, repl, count: int = 0):
    """lm-eval's one custom filter (``lm_eval.utils.regex_replace``)."""
    return re.sub(pattern, repl, string, count=count)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, compiling each distinct template once: lm-eval's ``apply_template`` calls ``from_string`` for every
    field of every item, and Jinja compiles the source to Python each time (about 0.6 ms; 1,700 compilations, a
    second of a cold start, for 200 multiple-choice items). A compiled template is immutable and renders nothing but
    what it is given, so one per source is the same template. Bounded: at most ``COMPILED_MAX`` sources, each at most
    ``COMPILED_CHARS`` long, are kept (a longer one is compiled every time, as before)."""

    COMPILED_MAX = 256
    COMPILED_CHARS = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._compiled: dict[str, Any] = {}

    def from_string(self, source, globals=None, template_class=None):  # type: ignore[override]
        if globals is not None or template_class is not None or not isinstance(source, str) or len(source) > self.COMPILED_CHARS:
            return super().from_string(source, globals, template_class)
        tpl = self._compiled.get(source)
        if tpl is None:
            tpl = super().from_string(source)
            if len(self._compiled) >= self.COMPILED_MAX:
                self._compiled.pop(next(iter(self._compiled), None), None)  # the oldest (another thread may take it first)
            self._compiled[source] = tpl
        return tpl

    def overlay(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        env = super().overlay(*args, **kwargs)
        env._compiled = {}  # an overlay's settings differ: its templates are its own
        return env


def sandbox_env() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = _regex_replace
    return env


SANDBOX = sandbox_env()


def install_sandbox() -> None:
    """Make lm-eval render every template in :data:`SANDBOX` (idempotent). ``apply_template`` and the chat
    template code read the module global ``env`` at call time, so replacing it covers every renderer."""
    import lm_eval.utils as lu

    if lu.env is not SANDBOX:
        lu.env = SANDBOX


def template_problem(text: str) -> str | None:
    """Why ``text`` may not be a suite template (None: it may). Parsed, never rendered."""
    try:
        tree = SANDBOX.parse(text)
    except TemplateSyntaxError as e:
        return f"is not a valid Jinja template ({e.message}, line {e.lineno})"
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name, nodes.Filter)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            return f"reaches the attribute '{node.attr}' (names starting with '_' are Python internals)"
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            return f"reaches the item '{node.arg.value}' (names starting with '_' are Python internals)"
        if isinstance(node, nodes.Name) and node.name in FORBIDDEN_NAMES:
            return f"uses the Jinja global '{node.name}' (only the document's fields may be used)"
        if isinstance(node, nodes.Filter) and node.name in FORBIDDEN_FILTERS:
            return f"uses the '{node.name}' filter (it reaches object attributes)"
    return None


def _strings(value: Any, key: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}[{i}]")


def check_templates(task: dict, where, prefix: str = "task") -> None:
    """Every string of a task config that holds Jinja syntax is a template lm-eval may render: refuse the
    unsafe ones, naming the key."""
    for key, text in _strings(task, prefix):
        if "{{" not in text and "{%" not in text and "{#" not in text:
            continue
        problem = template_problem(text)
        if problem:
            raise ConfigError(where, key, f"the template {problem}",
                              "a suite template may only use the item's fields, Jinja filters and plain expressions; it cannot run code")
