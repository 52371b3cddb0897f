"""The one error type for bad input: :class:`InputError` names the file, the line and what was wrong.

Loaders, config validation and the service raise it (or a subclass); the CLI prints it as one line and exits
with status 2, never a traceback. It is a ``ValueError`` so callers that already catch ``ValueError`` keep
working.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable


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


class InputNotFound(InputError, FileNotFoundError):
    """An input file that does not exist: an :class:`InputError` that callers may also catch as
    ``FileNotFoundError``."""


class MemoryBudgetError(InputError):
    """An input too large for the memory this process has (raised by :mod:`r2rec.data.budget` before the work
    starts, with the estimate and what to change)."""


# -- secrets ---------------------------------------------------------------------------------------------
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s?#]+)@")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[\w.-]*?(?:key|token|secret|password|passwd|sig|signature|auth|"
    r"credential)[\w.-]*))=(?P<value>[^&#\s\"']+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<name>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
# Token formats of the common providers (OpenAI sk-..., Hugging Face hf_..., Groq gsk_..., xAI xai-...).
_KEY_LIKE = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{30,}|gsk_[A-Za-z0-9]{20,}|xai-[A-Za-z0-9]{20,})")
REDACTED = "***"
# Environment variables that hold API keys: their values are redacted from every text :func:`redact` sees.
SECRET_ENV_VARS = ("R2REC_OPENAI_API_KEY", "OPENAI_API_KEY")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with credentials replaced by ``***``: every value in ``secrets`` and in the API-key environment
    variables (:data:`SECRET_ENV_VARS`), the user info of URLs (``https://user:token@host``), query parameters
    named like a key or token (``?key=...``, ``&access_token=...``), ``Bearer ...`` values and API-key-shaped
    words (``sk-...``).

    Apply it to anything that reaches a message, a log or a file and may hold a URL or a server's reply."""
    secrets = (*secrets, *(os.environ.get(v) for v in SECRET_ENV_VARS))
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m['name']}={REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m['name']}{REDACTED}", text)
    return _KEY_LIKE.sub(REDACTED, text)


def redact_obj(obj: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A copy of a JSON-like object (dicts, lists, tuples, strings) with :func:`redact` applied to every string."""
    secrets = tuple(secrets)
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, dict):
        return {k: redact_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v, secrets) for v in obj)
    return obj
