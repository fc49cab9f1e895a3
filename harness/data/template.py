"""How an example becomes text: the tokenizer's chat template when it has one, else a plain template.

The plain template (documented in docs/config.md) for a conversation is::

    ### System:\\n{system}\\n\\n            (only when there is a system message)
    ### Instruction:\\n{user}\\n\\n### Response:\\n{assistant}<eos>

repeated per turn (turns separated by a blank line). Text is returned as
segments ``(text, supervised)`` so the loss can be put on response tokens only.
Evaluation suites use :func:`plain_prompt` (:mod:`harness.prompt`) so a domain question is asked in
the same shape the adapter was trained on.
"""

from __future__ import annotations

from ..prompt import PLAIN_SYSTEM, PLAIN_USER
from .formats import Example

TURN_SEPARATOR = "\n\n"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def segments(example: Example, tokenizer, use_chat_template: bool | None = None) -> list[tuple[str, bool]]:
    """Split an example into (text, supervised) pieces; each response ends with EOS."""
    eos = tokenizer.eos_token or ""
    if use_chat_template is None:
        use_chat_template = has_chat_template(tokenizer)
    if use_chat_template:
        return _chat_segments(example, tokenizer, eos)
    out: list[tuple[str, bool]] = []
    pending = ""
    for role, content in example.messages:
        if role == "system":
            pending += PLAIN_SYSTEM.format(content=content)
        elif role == "user":
            pending += PLAIN_USER.format(content=content)
        else:
            out.append((pending, False))
            out.append((content + eos, True))
            pending = TURN_SEPARATOR
    return [(t, s) for t, s in out if t]


def _chat_segments(example: Example, tokenizer, eos: str) -> list[tuple[str, bool]]:
    msgs = [{"role": r, "content": c} for r, c in example.messages]
    out: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise ValueError("the tokenizer's chat template does not render conversations incrementally; set chat_template: false")
        out.append((prefix[len(done):], False))
        response = full[len(prefix):]
        if eos and not response.rstrip().endswith(eos):
            response += eos
        out.append((response, True))
        done = full if full.endswith(response) else prefix + response
    return [(t, s) for t, s in out if t]
