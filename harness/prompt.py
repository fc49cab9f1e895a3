"""The plain prompt: the shape of a question when the tokenizer has no chat template.

Training writes examples in it (:mod:`harness.data.template`) and the suites ask their questions in it
(:mod:`harness.suites`), so a domain question is asked in the same shape the adapter was trained on. It lives
here, below both, so neither package imports the other for it.
"""

from __future__ import annotations

PLAIN_SYSTEM = "### System:\n{content}\n\n"
PLAIN_USER = "### Instruction:\n{content}\n\n### Response:\n"


def plain_prompt(question: str, system: str | None = None) -> str:
    return (PLAIN_SYSTEM.format(content=system) if system else "") + PLAIN_USER.format(content=question)
