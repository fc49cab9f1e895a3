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

Templates are also bounded in what they may cost (:class:`TemplateBudgetError`, a sandbox ``SecurityError``):
every value a template builds with ``*``, ``+``, ``%``, ``~``, ``**``, a string method or a filter that grows
text (``center``, ``indent``, ``join``, ``replace``, ``format``, ``wordwrap``, ``batch``, ``slice``, ``sum``,
``tojson``) is checked *before* it is built: at most ``MAX_VALUE_LEN`` characters or items, integers of at
most ``MAX_INT_BITS`` bits. One render returns at most ``MAX_RENDER_CHARS`` characters, writes at most
``MAX_RENDER_WORK`` characters through ``{{ }}`` and ``~`` in all (a macro called in a loop), and uses at most
``MAX_RENDER_SECONDS`` of CPU time: every ``{% for %}`` loop counts its iterations against the clock, and on
the main thread a ``SIGVTALRM`` CPU timer also stops a single long operation (a regular expression that
backtracks). The previous ``SIGVTALRM`` handler and ``ITIMER_VIRTUAL`` timer are restored after each render;
``SIGALRM`` / ``ITIMER_REAL`` (pytest-timeout's) are never touched.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from functools import update_wrapper
from typing import Any, Iterator

from jinja2 import BaseLoader, StrictUndefined, Template, TemplateSyntaxError, nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.visitor import NodeTransformer

from ..errors import ConfigError

FORBIDDEN_NAMES = frozenset({"cycler", "joiner", "namespace", "lipsum", "self"})
FORBIDDEN_FILTERS = frozenset({"attr"})


@pass_context  # a context filter is never run at compile time (constant folding), only inside a render's budget
def _regex_replace(context, string, pattern, repl, count: int = 0):
    """lm-eval's one custom filter (``lm_eval.utils.regex_replace``), its result bounded as it is built."""
    size = len(string) if isinstance(string, str) else 0

    def one(m):
        nonlocal size
        text = m.expand(repl)
        size += len(text) - (m.end() - m.start())
        if size > MAX_VALUE_LEN:
            raise _too_big("a string (regex_replace)", size, MAX_VALUE_LEN)
        return text

    return re.sub(pattern, one if isinstance(repl, str) else repl, string, count=count)


# ---------------------------------------------------------------- what one render may cost

MAX_VALUE_LEN = 1_000_000  # characters of a string / items of a list a template may build in one step
MAX_INT_BITS = 4096  # an integer a template computes (``**``, ``*``): far above any count or index
MAX_RENDER_CHARS = 1_000_000  # what one render may return (a prompt, a target, a choice list)
MAX_DOCUMENT_CHARS = 16 << 20  # a render that passes a whole document through (a perplexity suite's {{text}}): one data line at most
MAX_RENDER_WORK = 4 * MAX_DOCUMENT_CHARS  # characters written through {{ }} and ~ in one render, all told
MAX_RENDER_SECONDS = 2.0  # CPU time of one render: real templates take well under a millisecond
_CHECK_EVERY = 256  # loop iterations between two looks at the clock


class TemplateBudgetError(SecurityError):
    """A template would build too large a value, return too much text, or run too long."""


def _too_big(what: str, size: int, limit: int, unit: str = "characters") -> TemplateBudgetError:
    return TemplateBudgetError(f"the template would build {what} of {size:,} {unit}; a template may build at most {limit:,}")


class _Budget:
    __slots__ = ("deadline", "work")

    def __init__(self) -> None:
        self.deadline = time.thread_time() + MAX_RENDER_SECONDS
        self.work = 0

    def check_time(self) -> None:
        if time.thread_time() > self.deadline:
            raise TemplateBudgetError(f"the template ran for more than {MAX_RENDER_SECONDS:g} s of CPU time (a loop or recursion too large for a prompt)")

    def charge(self, n: int) -> None:
        self.work += n
        if self.work > MAX_RENDER_WORK:
            raise TemplateBudgetError(f"the template wrote more than {MAX_RENDER_WORK:,} characters in one render (a loop or macro repeating large text)")


_local = threading.local()


def _budget() -> _Budget | None:
    return getattr(_local, "budget", None)


def _on_cpu_timer(signum, frame) -> None:
    b = _budget()
    if b is None:
        return
    left = b.deadline - time.thread_time()
    if left <= 0:
        raise TemplateBudgetError(f"the template ran for more than {MAX_RENDER_SECONDS:g} s of CPU time (a loop or recursion too large for a prompt)")
    signal.setitimer(signal.ITIMER_VIRTUAL, max(left, 0.01))  # other threads' CPU time counted too: look again later


@contextlib.contextmanager
def render_budget() -> Iterator[None]:
    """The budget of one render (a render inside a render shares the outer one)."""
    if _budget() is not None:
        yield
        return
    _local.budget = _Budget()
    armed = None
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        try:
            old_handler = signal.signal(signal.SIGVTALRM, _on_cpu_timer)
        except ValueError:  # not the main interpreter's main thread
            pass
        else:
            old_timer = signal.setitimer(signal.ITIMER_VIRTUAL, MAX_RENDER_SECONDS)
            armed = (old_handler, old_timer, time.process_time())
    try:
        yield
    finally:
        _local.budget = None
        if armed is not None:
            old_handler, (old_delay, old_interval), started = armed
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
            signal.signal(signal.SIGVTALRM, old_handler)
            if old_delay > 0:  # someone else's timer: give it back, less the CPU time this render used
                signal.setitimer(signal.ITIMER_VIRTUAL, max(old_delay - (time.process_time() - started), 0.001), old_interval)


def _seq_len(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PRINTF = re.compile(r"%[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(fmt: Any) -> None:
    if not isinstance(fmt, str):
        return
    for m in _PRINTF.finditer(fmt.replace("%%", "")):
        for n in m.groups():
            if n == "*":
                raise TemplateBudgetError("the template gives a '%' format a '*' width (write the width as a number)")
            if n is not None and int(n) > MAX_VALUE_LEN:
                raise _too_big("a formatted field", int(n), MAX_VALUE_LEN)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse, before it is computed, a ``*``, ``**``, ``+`` or ``%`` whose result is too large."""
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            size = _seq_len(seq)
            if size is not None and _int(n) and size * n > MAX_VALUE_LEN:
                raise _too_big("a repeated value", size * n, MAX_VALUE_LEN, "characters or items")
        if _int(left) and _int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _too_big("a number", left.bit_length() + right.bit_length(), MAX_INT_BITS, "bits")
    elif operator == "**":
        if _int(left) and _int(right) and right > 0 and abs(left) > 1:
            bits = (abs(left).bit_length() - 1) * right + 1 if right <= MAX_INT_BITS else MAX_INT_BITS + 1
            if bits > MAX_INT_BITS:
                raise TemplateBudgetError(f"the template would compute a number of more than {MAX_INT_BITS:,} bits ({str(left)[:20]} ** {str(right)[:20]})")
    elif operator == "+":
        a, b = _seq_len(left), _seq_len(right)
        if a is not None and b is not None and a + b > MAX_VALUE_LEN:
            raise _too_big("a joined value", a + b, MAX_VALUE_LEN, "characters or items")
    elif operator == "%":
        _check_printf(left)


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, with each field's width and precision bounded."""

    _SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")

    def format_field(self, value: Any, format_spec: str) -> Any:
        m = self._SPEC.match(format_spec)
        for n in (m.groups() if m else ()):
            if n and int(n) > MAX_VALUE_LEN:
                raise _too_big("a formatted field", int(n), MAX_VALUE_LEN)
        return super().format_field(value, format_spec)


_STR_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def _check_str_method(obj: Any, args: tuple, kwargs: dict) -> tuple:
    """Refuse a str/bytes method call whose result would be too large (and return the args to call with)."""
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if not isinstance(owner, (str, bytes)):
        return args
    if name in _STR_WIDTH_METHODS:
        width = args[0] if args else kwargs.get("width")
        if _int(width) and width > MAX_VALUE_LEN:
            raise _too_big(f"a string ({name})", width, MAX_VALUE_LEN)
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")
        if _int(size) and len(owner) + tabs * size > MAX_VALUE_LEN:
            raise _too_big("a string (expandtabs)", len(owner) + tabs * size, MAX_VALUE_LEN)
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
    elif name == "join" and args:
        parts = list(args[0])
        size = sum(len(p) for p in parts if isinstance(p, (str, bytes))) + len(owner) * max(len(parts) - 1, 0)
        if size > MAX_VALUE_LEN:
            raise _too_big("a joined string", size, MAX_VALUE_LEN)
        return (parts, *args[1:])
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        if len(owner) * longest > MAX_VALUE_LEN:
            raise _too_big("a string (translate)", len(owner) * longest, MAX_VALUE_LEN)
    return args


def _check_replace(s: Any, old: Any, new: Any, count: Any) -> None:
    if not isinstance(s, (str, bytes)) or not isinstance(old, type(s)) or not isinstance(new, type(s)):
        return
    hits = s.count(old) if old else len(s) + 1
    if _int(count) and count >= 0:
        hits = min(hits, count)
    size = len(s) + hits * (len(new) - len(old))
    if size > MAX_VALUE_LEN:
        raise _too_big("a string (replace)", size, MAX_VALUE_LEN)


def _checked_result(value: Any) -> Any:
    size = _seq_len(value)
    if size is not None and size > MAX_VALUE_LEN:
        raise _too_big("a value", size, MAX_VALUE_LEN, "characters or items")
    return value


@pass_context
def _loop(context, iterable):
    """Every ``{% for %}`` iterates through this: it looks at the render's clock every ``_CHECK_EVERY`` items."""
    b = _budget()
    if b is None:
        return iterable

    def counted():
        for n, item in enumerate(iterable):
            if not n % _CHECK_EVERY:
                b.check_time()
            yield item

    return counted()


@pass_context
def _join(context, parts):
    """The ``~`` operator (Jinja's ``str_join``), bounded."""
    texts = [str(p) for p in parts]
    size = sum(map(len, texts))
    if size > MAX_VALUE_LEN:
        raise _too_big("a string (~)", size, MAX_VALUE_LEN)
    b = _budget()
    if b is not None:
        b.charge(size)
    return "".join(texts)


def _finalize(value: Any) -> str:
    """Every ``{{ }}`` value: at most ``MAX_DOCUMENT_CHARS`` characters (a field passed through whole: the template
    built nothing; what it builds is held to ``MAX_VALUE_LEN`` where it builds it), charged to the render."""
    text = str(value)
    if len(text) > MAX_DOCUMENT_CHARS:
        raise _too_big("an output", len(text), MAX_DOCUMENT_CHARS)
    b = _budget()
    if b is not None:
        b.charge(len(text))
        b.check_time()
    return text


class _Bound(NodeTransformer):
    """Route every loop through :func:`_loop` and every ``~`` through :func:`_join` (compiled code, not the check)."""

    def visit_For(self, node):
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "laf_loop", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node):
        node = self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "laf_join", [], [], None, None, lineno=node.lineno)


class _BudgetTemplate(Template):
    def render(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        with render_budget():
            out, size = [], 0
            for piece in self.generate(*args, **kwargs):
                size += len(piece)
                if size > MAX_DOCUMENT_CHARS:  # prompts are held to MAX_RENDER_CHARS where the suite is checked (lm_eval._render)
                    raise TemplateBudgetError(f"the template renders more than {MAX_DOCUMENT_CHARS:,} characters; a rendered text may hold at most that")
                out.append(piece)
            return "".join(out)


def _bounded_filters(filters: dict) -> dict:
    """Jinja's filters that can grow a value, each refusing a too-large result before building it."""
    f = dict(filters)
    center, indent, fmt, join, replace, batch, slice_, wordwrap, tojson = (
        f["center"], f["indent"], f["format"], f["join"], f["replace"], f["batch"], f["slice"], f["wordwrap"], f["tojson"])

    def do_center(value, width=80):
        if _int(width) and width > MAX_VALUE_LEN:
            raise _too_big("a string (center)", width, MAX_VALUE_LEN)
        return center(value, width)

    def do_indent(s, width=4, first=False, blank=False):
        pad = width if _int(width) else len(str(width))
        lines = str(s).count("\n") + 1
        if len(str(s)) + lines * pad > MAX_VALUE_LEN:
            raise _too_big("a string (indent)", len(str(s)) + lines * pad, MAX_VALUE_LEN)
        return indent(s, width, first, blank)

    def do_format(value, *args, **kwargs):
        _check_printf(str(value))
        return _checked_result(fmt(value, *args, **kwargs))

    @pass_context
    def do_join(context, value, d="", attribute=None):
        if attribute is not None:
            value = map(make_attrgetter(context.environment, attribute), value)
        parts = [str(p) for p in value]
        size = sum(map(len, parts)) + len(str(d)) * max(len(parts) - 1, 0)
        if size > MAX_VALUE_LEN:
            raise _too_big("a joined string", size, MAX_VALUE_LEN)
        return join(context.eval_ctx, parts, d)

    @pass_context
    def do_replace(context, s, old, new, count=None):
        _check_replace(str(s), str(old), str(new), count if count is not None else -1)
        return replace(context.eval_ctx, s, old, new, count)

    def do_batch(value, linecount, fill_with=None):
        if _int(linecount) and linecount > MAX_VALUE_LEN:
            raise _too_big("a batch", linecount, MAX_VALUE_LEN, "items")
        return batch(value, linecount, fill_with)

    @pass_context
    def do_slice(context, value, slices, fill_with=None):  # jinja's slice takes the evaluation context first
        if _int(slices) and slices > MAX_VALUE_LEN:
            raise _too_big("a slicing", slices, MAX_VALUE_LEN, "slices")
        return slice_(context, value, slices, fill_with)

    @pass_context
    def do_wordwrap(context, s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True):
        breaks = len(str(s)) // max(width if _int(width) else 1, 1) + str(s).count("\n") + 1
        size = len(str(s)) + breaks * len(str(wrapstring or "\n"))
        if size > MAX_VALUE_LEN:
            raise _too_big("a string (wordwrap)", size, MAX_VALUE_LEN)
        return wordwrap(context.environment, s, width, break_long_words, wrapstring, break_on_hyphens)

    @pass_context
    def do_tojson(context, value, indent=None):
        if (_int(indent) and indent > 64) or (isinstance(indent, str) and len(indent) > 64):
            raise TemplateBudgetError("the template gives tojson an indent of more than 64")
        return _checked_result(tojson(context.eval_ctx, value, indent))

    @pass_context
    def do_sum(context, iterable, attribute=None, start=0):
        if attribute is not None:
            iterable = map(make_attrgetter(context.environment, attribute), iterable)
        total = start
        for item in iterable:
            check_binop("+", total, item)
            total = total + item
        return total

    f.update(center=do_center, indent=do_indent, format=do_format, join=do_join, replace=do_replace, batch=do_batch,
             slice=do_slice, wordwrap=do_wordwrap, tojson=do_tojson, sum=do_sum, laf_loop=_loop, laf_join=_join)
    return f


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, compiling each distinct template once: lm-eval's ``apply_template`` calls ``from_string`` for every
    field of every item, and Jinja compiles the source to Python each time (about 0.6 ms; 1,700 compilations, a
    second of a cold start, for 200 multiple-choice items). A compiled template is immutable and renders nothing but
    what it is given, so one per source is the same template. Bounded: at most ``COMPILED_MAX`` sources, each at most
    ``COMPILED_CHARS`` long, are kept (a longer one is compiled every time, as before)."""

    COMPILED_MAX = 256
    COMPILED_CHARS = 4096
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    template_class = _BudgetTemplate

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._compiled: dict[str, Any] = {}
        self.filters = _bounded_filters(self.filters)

    def call_binop(self, context, operator, left, right):  # type: ignore[override]
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # type: ignore[override]  # noqa: N805
        args = _check_str_method(__obj, args, kwargs)
        b = _budget()
        if b is not None:
            b.check_time()
        return _checked_result(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value):  # type: ignore[override]
        """``str.format`` / ``format_map`` as the sandbox has them, with every field's width and precision bounded."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None or type(value.__self__) is not str:
            return wrapper  # Markup (never made here: no autoescape) keeps Jinja's escaping formatter
        text, is_map, formatter = value.__self__, value.__name__ == "format_map", _BoundedFormatter(self)

        def bounded(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument and no keywords")
                args, kwargs = (), args[0]
            return _checked_result(formatter.vformat(text, args, kwargs))

        return update_wrapper(bounded, value)

    def _generate(self, source, name, filename, defer_init=False):  # type: ignore[override]
        source = _Bound().visit(source)
        source.set_environment(self)
        return super()._generate(source, name, filename, defer_init=defer_init)

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
    env = _Sandbox(loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True, finalize=_finalize)
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
