"""``RUN`` or ``RUN#MODEL``: how every command names a model of a finished evaluation run (one parser, one error).

MODEL is ``base`` or an adapter ref such as ``support@3``; it follows the *last* ``#`` (an adapter ref never holds
one, a folder name may).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ..errors import LafError

RUN_REF_HINT = "write RUN or RUN#MODEL: RUN is the folder of a finished `laf eval` / `laf run`, MODEL is base or an adapter such as support@3"


class RunRef(NamedTuple):
    folder: str  # as written (labels and messages show it unchanged)
    model: str | None  # None: the command's default model of that run

    @property
    def path(self) -> Path:
        return Path(self.folder)


def parse_run_ref(ref: str) -> RunRef:
    """``RUN`` -> (RUN, None); ``RUN#MODEL`` -> (RUN, MODEL); ``RUN#`` -> (RUN, None). A reference without a run
    folder (empty, ``#MODEL``) is the one error every command gives for a bad reference."""
    folder, sep, model = ref.rpartition("#")
    if not sep:
        folder, model = ref, ""
    if not folder.strip():
        raise LafError(f"'{ref[:200]}' is not a run reference: it names no run folder", RUN_REF_HINT)
    return RunRef(folder, model or None)
