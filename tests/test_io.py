"""r2rec.io: atomic writes keep the old file when interrupted, the JSON-lines log resumes past a torn line,
fingerprints are stable."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from r2rec.io import (
    JsonlLog,
    append_log,
    atomic_dir,
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    fingerprint,
    read_log,
    remove_stale_tmp,
    sha256_file,
)


class Unserializable:
    pass


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_writes_replace_the_file(tmp_path):
    path = tmp_path / "sub" / "a.json"  # the folder is created
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"b": 1, "a": [1, 2]}
    assert path.read_text() == json.dumps({"b": 1, "a": [1, 2]}, indent=2)  # as json.dumps writes it
    atomic_write_text(path, "é\n")
    assert path.read_text(encoding="utf-8") == "é\n"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert _leftovers(path.parent) == []


def test_interrupted_write_leaves_the_old_content(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"step": 1})
    # The serializer fails halfway through (after "{"step": 2, " is written to the temporary file).
    with pytest.raises(TypeError):
        atomic_write_json(path, {"step": 2, "bad": Unserializable()})
    assert json.loads(path.read_text()) == {"step": 1}
    assert _leftovers(tmp_path) == []
    # Same for any block, with any exception (Ctrl-C included), and for a file that did not exist yet.
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(path) as f:
            f.write('{"step": 3')
            raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"step": 1}
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "new.json", [Unserializable()])
    assert not (tmp_path / "new.json").exists() and _leftovers(tmp_path) == []


def test_atomic_dir(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out, marker="config.json") as tmp:
        assert tmp.parent == tmp_path and not out.exists()
        (tmp / "config.json").write_text("{}")
    assert (out / "config.json").exists()
    # Another process finished first: its complete copy is kept, ours dropped.
    with atomic_dir(out, marker="config.json") as tmp:
        (tmp / "config.json").write_text('{"mine": 1}')
    assert (out / "config.json").read_text() == "{}"
    # An exception: nothing appears, nothing is left behind.
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "other") as tmp:
            (tmp / "x").write_text("x")
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    (tmp_path / "sub").mkdir()
    stale_file = tmp_path / "sub" / f"samples.jsonl.gz.{dead_pid}-0123abcd.tmp"
    stale_file.write_text("half")
    stale_dir = tmp_path / f"final.{dead_pid}-89abcdef.tmp"
    (stale_dir / "inner").mkdir(parents=True)
    (stale_dir / "inner" / "adapter.safetensors").write_bytes(b"x")
    live = tmp_path / f"state.json.{os.getpid()}-deadbeef.tmp"  # a writer that still runs
    live.write_text("{}")
    mine = tmp_path / "notes.tmp"  # not a name atomic writes make
    mine.write_text("keep")
    removed = remove_stale_tmp(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_dir])
    assert not stale_file.exists() and not stale_dir.exists() and live.exists() and mine.exists()


def test_log_appends_and_resumes(tmp_path):
    path = tmp_path / "logs" / "progress.jsonl"
    assert read_log(path) == []
    with JsonlLog(path) as log:
        assert log.rows == []
        log.append({"i": 0, "t": "é"})
        log.extend([{"i": 1}, {"i": 2}])
    append_log(path, {"i": 3})
    assert [r["i"] for r in read_log(path)] == [0, 1, 2, 3]
    with JsonlLog(path) as log:
        assert log.rows == read_log(path)
    assert read_log(path)[0]["t"] == "é"


def test_log_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"i": 0}\n{"i": 1}\n{"i": 2, "te')  # killed mid-append
    assert read_log(path) == [{"i": 0}, {"i": 1}]
    assert path.read_text().endswith('"te')  # reading does not change the file
    # A line without its newline is torn even when it parses: the append had not finished.
    path.write_text('{"i": 0}\n{"i": 1}')
    assert read_log(path) == [{"i": 0}]
    path.write_text('{"i": 0}\n{"i": 1}\n{"i": 2, "te')
    with JsonlLog(path) as log:
        assert log.rows == [{"i": 0}, {"i": 1}]
        log.append({"i": 2})  # starts on a fresh line: the torn one was cut
    assert path.read_text().splitlines() == ['{"i": 0}', '{"i": 1}', '{"i": 2}']


def test_log_refuses_a_corrupt_complete_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2: malformed line"):
        read_log(path)
    path.write_text('{"i": 0}\n\n{"i": 2}\n')  # blank lines are skipped
    assert read_log(path) == [{"i": 0}, {"i": 2}]


def test_fingerprints_are_stable(tmp_path):
    a = {"b": [1, 2], "a": {"y": 1.5, "x": None}, "p": tmp_path}
    b = {"a": {"x": None, "y": 1.5}, "p": tmp_path, "b": [1, 2]}
    assert fingerprint(a) == fingerprint(b)  # key order does not matter
    assert fingerprint(a) != fingerprint({**a, "b": [2, 1]})  # list order does
    # Pinned: a stored key (eval parts, pipeline state, the teacher cache) must keep matching across versions.
    assert (
        fingerprint({"k": 1, "a": [1.5, None, "é"]})
        == "474e2fed7b7264fd8d9a69f0cedd0154c9d0374d1a7806f4f2cbed28652e95b2"
    )
    # ... and equal what earlier versions computed inline for those keys.
    payload = {"model": "m", "messages": [{"role": "user", "content": "Amélie"}]}
    assert fingerprint(payload) == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    assert (
        fingerprint(payload, ensure_ascii=False)
        == hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    )
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc")
    assert sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    assert sha256_file(f, chunk=1) == sha256_file(f)
