"""The one error type for bad input: :class:`InputError` names the file, the line and what was wrong.

Loaders, config validation and the service raise it (or a subclass); the CLI prints it as one line and exits
with status 2, never a traceback. It is a ``ValueError`` so callers that already catch ``ValueError`` keep
working.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input. ``str()`` reads ``path:line: what`` (path and line when known)."""

    def __init__(self, what: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.what, self.path, self.line = what, None if path is None else str(path), line
        where = self.path or ""
        if where and line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {what}" if where else what)


class ConfigError(InputError):
    """A config value (YAML section, key=value override) that is not allowed; ``path`` is the config file."""
