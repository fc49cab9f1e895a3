"""One error type for everything a user can cause.

Every stage raises :class:`LafError` with the cause and the fix; the CLI turns
it into one readable message and exit code 3 (no traceback unless --debug).
"""

from __future__ import annotations


class LafError(Exception):
    """A problem the user can fix: says what went wrong and what to do."""

    exit_code = 3

    def __init__(self, cause: str, fix: str | None = None):
        self.cause = cause
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        if self.fix:
            return f"{self.cause}\n  fix: {self.fix}"
        return self.cause


class ConfigError(LafError):
    """A configuration file that does not validate: names file, key and expectation."""

    def __init__(self, path, key: str | None, problem: str, fix: str | None = None):
        where = f"{path}" + (f": key '{key}'" if key else "")
        super().__init__(f"{where}: {problem}", fix)
        self.path = path
        self.key = key
        self.problem = problem
