"""Files that survive a crash: atomic writes, an append-only JSON-lines log that resumes, content fingerprints.

The stages write their files through these few functions, so a run killed at any instant leaves each file as it
was or complete, never half written:

- :func:`atomic_open` (and :func:`atomic_write_text`, :func:`atomic_write_bytes`, :func:`atomic_write_json`,
  :func:`atomic_dir`): write to a temporary file (folder) beside the target, fsync it, then ``os.replace`` it
  over the target. An exception while writing (a failing serializer, Ctrl-C) removes the temporary file and
  leaves the old content in place; what a killed process leaves behind, :func:`remove_stale_tmp` removes (each
  stage calls it when it writes its manifest).
- :class:`JsonlLog`: an append-only JSON-lines file (the teacher's response cache, the thoughts progress, the
  val curve). Each append is flushed and fsynced; on open the complete lines are read back and a torn last
  line (a run killed mid-append) is ignored and cut, so the next append starts on a fresh line.
- :func:`sha256_file`, :func:`fingerprint`: content hashes of a file and of a JSON-able object (sorted keys),
  which manifests, resume keys and caches compare.
- :func:`check_input`, :func:`iter_lines`, :func:`iter_jsonl`, :func:`read_jsonl`: reading input files (the
  loaders' text files, prepared samples, chains, traces), where every fault is one
  :class:`~r2rec.errors.InputError` naming the file and the line: a missing file, a folder, an unreadable file,
  bytes that are not UTF-8, a NUL byte, an over-long line, a truncated or corrupt gzip stream, a line that is not
  a JSON object. A UTF-8 byte-order mark is dropped and CRLF line endings are read as LF.

Bottom layer: imports nothing of r2rec but :mod:`r2rec.errors`.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from r2rec.errors import InputError, InputNotFound


# -- atomic writes ---------------------------------------------------------------------------------------
def _tmp_name(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (same folder, so ``os.replace`` is a rename); ends in ``.tmp``."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


_TMP = re.compile(r"\.(\d+)-[0-9a-f]{8}\.tmp$")  # what _tmp_name appends: .<pid>-<8 hex>.tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours (PermissionError), or a platform without signal 0
        return True
    return True


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders that killed writers left under ``folder`` (names made by
    :func:`atomic_open` / :func:`atomic_dir` whose process is gone); returns what was removed. A live writer's
    temporary file (its pid still runs, e.g. another seed's process) is left alone."""
    removed = []
    for tmp in sorted(Path(folder).rglob("*.tmp"), key=lambda q: len(q.parts), reverse=True):
        m = _TMP.search(tmp.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str = "utf-8", newline: str | None = None):
    """``with atomic_open(path) as f: ...``: ``f`` writes a temporary file beside ``path`` that replaces it when
    the block ends without an exception (after an fsync); on an exception the temporary file is removed and
    ``path`` keeps its old content (or stays absent). ``mode``: ``"w"`` (text) or ``"wb"`` (bytes). The folder
    is created when missing."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    f = open(tmp, "xb") if mode == "wb" else open(tmp, "x", encoding=encoding, newline=newline)
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, **dumps) -> Path:
    """Write ``obj`` as JSON (``dumps``: further ``json.dump`` options, e.g. ``ensure_ascii=False``), atomically.
    The JSON is streamed into the temporary file, so a value that fails to serialize halfway leaves ``path``
    untouched."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=indent, **dumps)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike, marker: str | None = None):
    """``with atomic_dir(out) as tmp: ...``: fill the temporary folder ``tmp`` (beside ``out``), which becomes
    ``out`` by one rename when the block ends without an exception; it is removed in every case.

    When ``out`` appeared meanwhile (another process finished first), its copy is kept if it holds ``marker``
    (a file it writes last; no marker = any content), else the rename error is raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        try:
            tmp.rename(path)
        except OSError:
            theirs = (path / marker).exists() if marker else path.is_dir() and any(path.iterdir())
            if not theirs:
                raise
        else:
            _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the append-only JSON-lines log ----------------------------------------------------------------------
def _complete_rows(path: Path, raw: bytes) -> tuple[list[dict], int]:
    """The rows of the complete (newline-ended) lines of ``raw`` and their length in bytes; blank lines are
    skipped. A complete line that is not a JSON object is corruption, not a torn append: InputError naming it."""
    end = raw.rfind(b"\n") + 1  # what follows the last newline is a torn append
    rows = []
    for lineno, line in enumerate(raw[:end].split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
            raise InputError(f"malformed line in an append-only log ({_json_fault(e)})", path, lineno) from None
        if not isinstance(row, dict):
            raise InputError(
                f"malformed line in an append-only log (a JSON {_json_type(row)}, not an object)", path, lineno
            )
        rows.append(row)
    return rows, end


def read_log(path: str | os.PathLike) -> list[dict]:
    """The rows of the JSON-lines log at ``path`` (none when it does not exist); a torn last line is ignored.
    Reads only: the file is not changed (:class:`JsonlLog` cuts the torn line when it appends)."""
    path = Path(path)
    return _complete_rows(path, path.read_bytes())[0] if path.exists() else []


class JsonlLog:
    """An append-only JSON-lines file that resumes.

    ``JsonlLog(path)`` reads the complete rows back into :attr:`rows`, cuts a torn last line (a run killed
    mid-append) so the next append starts on a fresh line, and opens the file for appending (the folder is
    created when missing). :meth:`append` writes one row per line, flushed and fsynced before it returns: a row
    that :meth:`append` returned for is on disk. Not thread-safe: callers sharing one log hold their own lock.

        with JsonlLog(run / "progress.jsonl") as log:
            done = {r["i"] for r in log.rows}
            log.append({"i": 7, "outcome": "kept"})
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = self.path.read_bytes() if self.path.exists() else b""
        self.rows, end = _complete_rows(self.path, raw)
        if end < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(end)
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8")

    def append(self, *rows: dict) -> None:
        """Append ``rows`` (one line each) and make them durable."""
        self.extend(rows)

    def extend(self, rows: Iterable[dict]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: the log is closed")
        self._file.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def append_log(path: str | os.PathLike, *rows: dict) -> None:
    """Append ``rows`` to the JSON-lines log at ``path`` (one open, cut a torn line, append, fsync, close)."""
    with JsonlLog(path) as log:
        log.extend(rows)


# -- fingerprints ----------------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(obj: Any, ensure_ascii: bool = True) -> str:
    """Hex sha256 of a JSON-able object: its JSON with sorted keys (values JSON cannot hold, such as paths,
    as ``str``), so two equal objects hash alike whatever their key order. ``ensure_ascii=False`` hashes
    non-ASCII text as UTF-8 instead of ``\\u`` escapes (the teacher cache keys were made that way)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=ensure_ascii, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# -- reading input files ---------------------------------------------------------------------------------
MAX_LINE_BYTES = 1 << 17
"""Longest line of a loader's text input (128 KiB, the csv module's own field limit)."""
MAX_JSONL_LINE_BYTES = 1 << 26
"""Longest line of a JSON-lines file (64 MiB): a bound on memory, far above any line the stages write."""
INT64_MAX = (1 << 63) - 1


def clip(value: Any, n: int = 60) -> str:
    """``repr(value)`` cut to about ``n`` characters, for quoting input in a one-line error."""
    text = repr(value)
    return text if len(text) <= n else f"{str(value)[:n]!r}... ({len(str(value)):,} characters)"


def check_input(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` when it names a regular file this process can read; else :class:`InputError` saying why
    (:class:`InputNotFound` when it does not exist), with ``what`` naming the file's role."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        dangling = " (a symbolic link to a missing file)" if path.is_symlink() else ""
        raise InputNotFound(f"{what} not found{dangling}", path) from None
    except OSError as e:  # a symbolic-link loop, a file where a folder belongs, permissions on a folder
        raise InputError(f"cannot read the {what}: {e.strerror or e}", path) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"is a folder, expected the {what}", path)
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"is not a regular file (a pipe, socket or device), expected the {what}", path)
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise InputError(f"cannot read the {what}: {e.strerror or e}", path) from None
    return path


def _gzip_fault(e: BaseException, lines: int) -> str:
    after = f" after line {lines}" if lines else ""
    if isinstance(e, EOFError):
        return f"the gzip stream ends early{after}: the file is truncated"
    if lines and "Not a gzipped file" in str(e):
        return f"unexpected bytes{after}, past the end of the gzip stream ({e})"
    return f"not a valid gzip file{after} ({e})"


def iter_lines(
    path: str | os.PathLike, what: str = "file", *, encoding: str = "utf-8", max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending) of each line of the text file at ``path``, gunzipped when
    the name ends in ``.gz``. Lines end in LF or CRLF; a UTF-8 byte-order mark at the start is dropped. The
    file is read as bytes and decoded line by line, so every fault is an :class:`InputError` naming the file
    and the line: see :func:`check_input`, bytes that are not ``encoding``, a NUL byte, a carriage return
    inside a line, a line longer than ``max_bytes``, a UTF-16 or gzip file read as text, a truncated or
    corrupt gzip stream."""
    path = check_input(path, what)
    gz = path.name.endswith(".gz")
    lineno = 0
    try:
        with open(path, "rb") as raw:
            f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            while True:
                try:
                    b = f.readline(max_bytes + 1)
                except (OSError, EOFError, zlib.error) as e:
                    if not gz:
                        raise
                    raise InputError(_gzip_fault(e, lineno), path) from None
                if not b:
                    return
                lineno += 1
                if len(b) > max_bytes and not b.endswith(b"\n"):
                    raise InputError(
                        f"line longer than {max_bytes:,} bytes (a binary file, or a field that "
                        "swallowed the rest of the file?)",
                        path,
                        lineno,
                    )
                if lineno == 1:
                    if b.startswith(codecs.BOM_UTF8):
                        b = b[len(codecs.BOM_UTF8) :]
                    elif b.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                        raise InputError(f"UTF-16 text; save the file as {encoding.upper()}", path, lineno)
                    elif not gz and b.startswith(b"\x1f\x8b"):
                        raise InputError(
                            "gzip-compressed data in a file whose name does not end in .gz; decompress it first",
                            path,
                            lineno,
                        )
                b = b[:-2] if b.endswith(b"\r\n") else b[:-1] if b.endswith(b"\n") else b
                if b"\0" in b or b"\r" in b:
                    for byte, fault in (
                        (b"\0", "a NUL byte (a binary or UTF-16 file?)"),
                        (
                            b"\r",
                            "a carriage return inside the line (CR-only line endings? "
                            "save the file with LF or CRLF line endings)",
                        ),
                    ):
                        if byte in b:
                            raise InputError(f"{fault} at column {b.find(byte) + 1}", path, lineno)
                try:
                    text = b.decode(encoding)
                except UnicodeDecodeError as e:
                    raise InputError(
                        f"not valid {encoding.upper()} text (byte 0x{b[e.start]:02x} at column "
                        f"{e.start + 1}); save the file as {encoding.upper()}",
                        path,
                        lineno,
                    ) from None
                yield lineno, text
    except InputError:
        raise
    except OSError as e:  # the file went away or failed while being read
        raise InputError(
            f"cannot read the {what}{f' after line {lineno}' if lineno else ''}: {e.strerror or e}", path
        ) from None


def _json_fault(e: BaseException) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at column {e.colno}"
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return str(e)


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def iter_jsonl(
    path: str | os.PathLike, what: str = "JSON-lines file", max_bytes: int = MAX_JSONL_LINE_BYTES
) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of the JSON-lines file at ``path`` (gunzipped when it ends
    in ``.gz``); a line that is not JSON, or JSON that is not an object, is an :class:`InputError` naming the
    file and line, as are the faults of :func:`iter_lines`."""
    for lineno, line in iter_lines(path, what, max_bytes=max_bytes):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise InputError(f"malformed JSON line ({_json_fault(e)})", path, lineno) from None
        if not isinstance(row, dict):
            raise InputError(f"expected a JSON object, got a {_json_type(row)}", path, lineno)
        yield lineno, row


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """The objects of a JSON-lines file (:func:`iter_jsonl` without the line numbers)."""
    for _, row in iter_jsonl(path):
        yield row
