"""Bad input through the real CLI: every case is ONE line on stderr naming the file (and the line where there is
one), exit status 2, no traceback, and nothing written before the fault is found. Files that are only written
differently (a byte-order mark, CRLF, a header or none, a gzip-compressed log) must give exactly the prepared
data of the clean files.

Families: the csv source's interactions log and titles file (encoding, structure, values, titles, the file
itself, the dataset as a whole), the GroupLens ``ml-100k`` files, LLaRA's ``portable/*.jsonl.gz`` splits, and a
prepared run folder read back by later stages (edited, truncated or not gzip). Tiny files in ``tmp_path``.
"""

from __future__ import annotations

import builtins
import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from r2rec.cli import main
from r2rec.data.schema import PreparedData
from r2rec.errors import InputError
from r2rec.io import JsonlLog, read_jsonl, read_log

N_ITEMS = 12
TITLES = "item,title\n" + "".join(f"m{i},Movie {i}\n" for i in range(N_ITEMS))
# Three users of six interactions each: a leave-one-out split gives each a val and a test sample.
ROWS = [
    (u, f"m{i}", 10 * k + j)
    for k, (u, first) in enumerate((("a", 0), ("b", 3), ("c", 6)))
    for j, i in enumerate(range(first, first + 6))
]
LOG_BODY = "".join(f"{u},{i},{t}\n" for u, i, t in ROWS)
LOG = "user,item,timestamp\n" + LOG_BODY
PREPARE = ["--seeds", "0", "--num-candidates", "5"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """Progress logs off, so stderr holds nothing but the error."""
    monkeypatch.setenv("R2REC_LOG_LEVEL", "WARNING")


def _bytes(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else text


def cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def assert_one_error(rc: int, err: str, command: str, path: Path, line: int | None, fragment: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    msg = lines[0]
    assert msg.startswith(f"r2rec {command}: error: "), msg
    where = f"{path}:{line}: " if line is not None else f"{path}"
    assert where in msg, (where, msg)
    if line is None:
        assert f"{path}:" in msg and not msg.split(f"{path}:", 1)[1].split(":", 1)[0].strip().isdigit(), msg
    assert fragment.lower() in msg.lower(), (fragment, msg)
    return msg


def prepare_csv(capsys, tmp_path, log, titles, *extra, log_name="log.csv", titles_name="titles.csv"):
    """Write the two files (bytes or text; a callable makes the path itself) and run `r2rec prepare`."""
    paths = {}
    for key, name, content in (("log", log_name, log), ("titles", titles_name, titles)):
        p = tmp_path / name
        if callable(content):
            content(p)
        else:
            p.write_bytes(_bytes(content))
        paths[key] = p
    rc, err = cli(
        capsys,
        "prepare",
        "--dataset",
        "csv",
        "--interactions",
        paths["log"],
        "--titles",
        paths["titles"],
        "--run",
        tmp_path / "run",
        *PREPARE,
        *extra,
    )
    return rc, err, paths


# -- makers of paths that are not plain files --------------------------------------------------------------
def _folder(p: Path) -> None:
    p.mkdir()


def _loop(p: Path) -> None:
    other = p.with_name(p.name + ".other")
    os.symlink(other, p)
    os.symlink(p, other)


def _dangling(p: Path) -> None:
    os.symlink(p.with_name("nowhere.csv"), p)


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _gz(text: str):
    return lambda p: p.write_bytes(gzip.compress(text.encode(), mtime=0))


def _with(text: str, lineno: int, line: str | bytes) -> bytes:
    """``text`` with its line ``lineno`` (1-based) replaced by ``line``."""
    lines = _bytes(text).split(b"\n")
    lines[lineno - 1] = _bytes(line)
    return b"\n".join(lines)


# (id, log, titles, extra args, file at fault ("log" / "titles"), line or None, fragment of the message)
CSV_CASES = [
    # encoding
    ("log-latin1-byte", _with(LOG, 3, b"a,m1,11\xe9"), TITLES, (), "log", 3, "not valid UTF-8"),
    ("titles-latin1-byte", LOG, _with(TITLES, 2, b"m0,Caf\xe9"), (), "titles", 2, "not valid UTF-8"),
    ("log-nul-byte", _with(LOG, 2, b"a,m0\x00,10"), TITLES, (), "log", 2, "NUL byte"),
    ("titles-nul-byte", LOG, _with(TITLES, 3, b"m1,Movie\x00 1"), (), "titles", 3, "NUL byte"),
    ("log-utf16", LOG.encode("utf-16"), TITLES, (), "log", 1, "UTF-16"),
    ("titles-utf16", LOG, TITLES.encode("utf-16"), (), "titles", 1, "UTF-16"),
    ("log-gzip-not-named-gz", gzip.compress(LOG.encode()), TITLES, (), "log", 1, "gzip-compressed"),
    ("log-cr-only-line-ends", LOG.replace("\n", "\r"), TITLES, (), "log", 1, "carriage return"),
    ("titles-cr-only-line-ends", LOG, TITLES.replace("\n", "\r"), (), "titles", 1, "carriage return"),
    # structure
    ("log-empty", "", TITLES, (), "log", None, "empty file"),
    ("log-header-only", "user,item,timestamp\n", TITLES, (), "log", None, "empty file"),
    ("log-blank-lines-only", "\n  \n\n", TITLES, (), "log", None, "empty file"),
    ("titles-empty", LOG, "", (), "titles", None, "empty file"),
    ("titles-header-only", LOG, "item,title\n", (), "titles", None, "only a header"),
    ("log-two-fields", _with(LOG, 3, "a,m1"), TITLES, (), "log", 3, "expected 3 fields"),
    ("log-four-fields", _with(LOG, 4, "a,m2,12,5"), TITLES, (), "log", 4, "got 4"),
    ("log-tab-separated", LOG.replace(",", "\t"), TITLES, (), "log", 1, "tab-separated"),
    ("log-unclosed-quote", _with(LOG, 3, 'a,"m1,11'), TITLES, (), "log", 3, "never closed"),
    ("log-field-over-128k", _with(LOG, 3, "a" * 200_000 + ",m1,11"), TITLES, (), "log", 3, "longer than"),
    ("titles-three-fields", LOG, _with(TITLES, 2, "m0,Movie 0,1995"), (), "titles", 2, "3 fields"),
    ("titles-unclosed-quote", LOG, _with(TITLES, 2, 'm0,"Movie 0'), (), "titles", 2, "never closed"),
    ("titles-huge-line", LOG, _with(TITLES, 2, "m0," + "x" * 300_000), (), "titles", 2, "longer than"),
    ("titles-file-is-a-log", LOG, LOG, (), "titles", 1, "interactions log?"),
    ("log-file-is-titles", TITLES, TITLES, (), "log", 1, "a titles file?"),
    ("log-is-id2name", "".join(f"{i}::Movie {i}\n" for i in range(3)), TITLES, (), "log", 1, "expected 3 fields"),
    # values
    ("ts-text", _with(LOG, 3, "a,m1,yesterday"), TITLES, (), "log", 3, "'yesterday' is not an integer"),
    ("ts-float", _with(LOG, 3, "a,m1,11.5"), TITLES, (), "log", 3, "is not an integer"),
    ("ts-nan", _with(LOG, 3, "a,m1,nan"), TITLES, (), "log", 3, "is not an integer"),
    ("ts-inf", _with(LOG, 3, "a,m1,inf"), TITLES, (), "log", 3, "is not an integer"),
    ("ts-empty", _with(LOG, 3, "a,m1,"), TITLES, (), "log", 3, "is not an integer"),
    ("ts-negative", _with(LOG, 3, "a,m1,-11"), TITLES, (), "log", 3, "negative"),
    ("ts-beyond-int64", _with(LOG, 3, "a,m1,9223372036854775808"), TITLES, (), "log", 3, "too large"),
    ("ts-huge", _with(LOG, 3, "a,m1," + "9" * 5000), TITLES, (), "log", 3, "too large"),
    ("first-line-float-ts", LOG_BODY.replace("a,m0,0", "a,m0,0.5", 1), TITLES, (), "log", 1, "not an integer"),
    ("first-line-nan-ts", LOG_BODY.replace("a,m0,0", "a,m0,NaN", 1), TITLES, (), "log", 1, "not an integer"),
    ("empty-user", _with(LOG, 3, ",m1,11"), TITLES, (), "log", 3, "empty user or item"),
    ("empty-item", _with(LOG, 3, "a,,11"), TITLES, (), "log", 3, "empty user or item"),
    ("user-with-newline", _with(LOG, 3, '"a\nb",m1,11'), TITLES, (), "log", 3, "runs over several lines"),
    ("unknown-item", _with(LOG, 3, "a,m99,11"), TITLES, (), "log", 3, "unknown item id 'm99'"),
    ("duplicate-row", LOG + "a,m0,0\n", TITLES, (), "log", 20, "duplicate row"),
    # titles
    ("titles-duplicate-id", LOG, TITLES + "m3,Another title\n", (), "titles", 14, "duplicate item id 'm3'"),
    ("titles-duplicate-line", LOG, TITLES + "m3,Movie 3\n", (), "titles", 14, "duplicate item id 'm3'"),
    ("titles-empty-title", LOG, _with(TITLES, 2, "m0,  "), (), "titles", 2, "missing or empty title"),
    ("titles-missing-title", LOG, _with(TITLES, 2, "m0"), (), "titles", 2, "missing or empty title"),
    ("titles-empty-id", LOG, _with(TITLES, 2, ",Movie 0"), (), "titles", 2, "empty item id"),
    ("titles-tab-separated", LOG, TITLES.replace(",", "\t"), (), "titles", 1, "tab-separated"),
    ("titles-title-with-newline", LOG, _with(TITLES, 2, 'm0,"Movie\n0"'), (), "titles", 2, "never closed"),
    ("titles-title-with-tab", LOG, _with(TITLES, 2, "m0,Movie\t0"), (), "titles", 2, "control character"),
    ("titles-id2name-empty-title", LOG, "m0::Movie 0\nm1::\n", (), "titles", 2, "missing or empty title"),
    # the file itself
    ("log-missing", lambda p: None, TITLES, (), "log", None, "not found"),
    ("titles-missing", LOG, lambda p: None, (), "titles", None, "not found"),
    ("log-is-a-folder", _folder, TITLES, (), "log", None, "is a folder"),
    ("titles-is-a-folder", LOG, _folder, (), "titles", None, "is a folder"),
    ("log-symlink-loop", _loop, TITLES, (), "log", None, "symbolic links"),
    ("titles-dangling-symlink", LOG, _dangling, (), "titles", None, "symbolic link to a missing file"),
    ("log-is-a-pipe", _fifo, TITLES, (), "log", None, "not a regular file"),
    (
        "log-truncated-gz",
        lambda p: p.write_bytes(gzip.compress(LOG.encode())[:-12]),
        TITLES,
        (),
        "log",
        None,
        "truncated",
    ),
    # the dataset as a whole
    (
        "every-user-too-short",
        "".join(f"u{k},m{k},1\n" for k in range(5)),
        TITLES,
        (),
        "log",
        None,
        "no user has the 5 interactions",
    ),
    (
        "too-few-items-for-candidates",
        LOG,
        TITLES,
        ("--num-candidates", "20"),
        "titles",
        None,
        "fewer than num_candidates",
    ),
    (
        "user-knows-the-whole-catalogue",
        LOG + "".join(f"a,m{i},{100 + i}\n" for i in range(6, 12)),
        TITLES,
        (),
        "log",
        None,
        "negatives",
    ),
]
CASE_NAMES = {"log-truncated-gz": "log.csv.gz"}


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in CSV_CASES])
def test_csv_bad_input_is_one_line(case, tmp_path, capsys):
    name, log, titles, extra, fault, line, fragment = case
    rc, err, paths = prepare_csv(capsys, tmp_path, log, titles, *extra, log_name=CASE_NAMES.get(name, "log.csv"))
    assert_one_error(rc, err, "prepare", paths[fault], line, fragment)
    assert not (tmp_path / "run" / "prepared").exists()  # the fault was found before anything was written


def test_unreadable_file(tmp_path, capsys, monkeypatch):
    """No read permission (simulated for root, who reads anything)."""
    log = tmp_path / "log.csv"
    log.write_text(LOG)
    log.chmod(0)
    if os.geteuid() == 0:
        real_open = builtins.open

        def deny(file, *args, **kw):
            if str(file) == str(log):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kw)

        monkeypatch.setattr(builtins, "open", deny)
    (tmp_path / "titles.csv").write_text(TITLES)
    rc, err = cli(
        capsys,
        "prepare",
        "--dataset",
        "csv",
        "--interactions",
        log,
        "--titles",
        tmp_path / "titles.csv",
        "--run",
        tmp_path / "run",
        *PREPARE,
    )
    monkeypatch.undo()
    log.chmod(0o644)
    assert_one_error(rc, err, "prepare", log, None, "permission denied")


# -- read correctly ----------------------------------------------------------------------------------------------
BOM = "\ufeff"
SAME_AS_CLEAN = [
    ("titles-bom", LOG, BOM + TITLES),
    ("log-bom-with-header", BOM + LOG, TITLES),
    ("log-bom-without-header", BOM + LOG_BODY, TITLES),
    ("titles-bom-without-header", LOG, BOM + TITLES.split("\n", 1)[1]),
    ("crlf-both", LOG.replace("\n", "\r\n"), TITLES.replace("\n", "\r\n")),
    ("crlf-and-bom-both", BOM + LOG.replace("\n", "\r\n"), BOM + TITLES.replace("\n", "\r\n")),
    ("no-final-newline", LOG.rstrip("\n"), TITLES.rstrip("\n")),
    ("blank-lines", LOG.replace("\n", "\n\n"), "\n" + TITLES.replace("\n", "\n  \n")),
    (
        "quoted-fields",
        "".join(f'"{u}","{i}","{t}"\n' for u, i, t in ROWS),
        TITLES.replace(",Movie", ',"Movie').replace("\n", '"\n').replace('title"', "title"),
    ),
    ("spaces-around-fields", LOG.replace(",", " , "), TITLES.replace(",", ", ")),
    ("titles-id2name-format", LOG, "".join(f"m{i}::Movie {i}\n" for i in range(N_ITEMS))),
    ("titles-other-header", LOG, TITLES.replace("item,title", "movie_id,movie_title")),
    ("log-other-header", LOG.replace("user,item,timestamp", "user_id,item_id,ts"), TITLES),
]


def _prepare_clean(root):
    """``r2rec prepare`` of the clean log and titles into ``root/run``."""
    (root / "log.csv").write_text(LOG)
    (root / "titles.csv").write_text(TITLES)
    assert (
        main(
            [
                "prepare",
                "--dataset",
                "csv",
                "--interactions",
                str(root / "log.csv"),
                "--titles",
                str(root / "titles.csv"),
                "--run",
                str(root / "run"),
                *PREPARE,
            ]
        )
        == 0
    )
    return root / "run"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The prepared files of the clean log and titles: {name: bytes} (meta.json without its file paths)."""
    return _prepared(_prepare_clean(tmp_path_factory.mktemp("clean")))


def _prepared(run: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in sorted((run / "prepared").iterdir()):
        if p.name == "meta.json":
            meta = json.loads(p.read_text())
            out[p.name] = {k: meta[k] for k in ("n_items", "counts", "dropped", "untitled_items")}
        else:
            out[p.name] = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    return out


@pytest.mark.parametrize("name, log, titles", [pytest.param(*c, id=c[0]) for c in SAME_AS_CLEAN])
def test_read_the_same_as_the_clean_files(name, log, titles, clean, tmp_path, capsys):
    rc, err, _ = prepare_csv(capsys, tmp_path, log, titles)
    assert rc == 0, err
    assert _prepared(tmp_path / "run") == clean


def test_gzip_compressed_log_reads_the_same(clean, tmp_path, capsys):
    rc, err, _ = prepare_csv(capsys, tmp_path, _gz(LOG), TITLES, log_name="log.csv.gz")
    assert rc == 0, err
    assert _prepared(tmp_path / "run") == clean


# -- GroupLens ml-100k from a data directory -------------------------------------------------------------------
U_ITEM = "".join(f"{m}|Movie {m} (1995)|01-Jan-1995||http://x|0\n" for m in range(1, 13))
U_DATA = "".join(
    f"{u}\t{m}\t3\t{880_000_000 + 10 * u + k}\n"
    for u in (1, 2, 3)
    for k, m in enumerate(range(1 + 3 * (u - 1), 7 + 3 * (u - 1)))
)

ML_CASES = [
    ("udata-ts-beyond-int64", _with(U_DATA, 2, "1\t2\t3\t9223372036854775808"), U_ITEM, "u.data", 2, "2^63-1"),
    ("udata-ts-negative", _with(U_DATA, 2, "1\t2\t3\t-5"), U_ITEM, "u.data", 2, "outside 0..2^63-1"),
    ("udata-float-rating", _with(U_DATA, 2, "1\t2\t3.5\t880000001"), U_ITEM, "u.data", 2, "expected 4 integers"),
    ("udata-five-fields", _with(U_DATA, 4, "1\t2\t3\t4\t5"), U_ITEM, "u.data", 4, "expected 4 integers"),
    ("udata-nul", _with(U_DATA, 3, "1\t3\t3\x00\t880000002"), U_ITEM, "u.data", 3, "NUL byte"),
    ("udata-is-a-folder", _folder, U_ITEM, "u.data", None, "is a folder"),
    ("udata-empty", "", U_ITEM, "u.data", None, "empty file"),
    ("uitem-movie-id-zero", U_DATA, _with(U_ITEM, 1, "0|Movie 0 (1995)|x||y|0"), "u.item", 1, "movie id >= 1"),
    ("uitem-duplicate", U_DATA, U_ITEM + "3|Again (1995)|x||y|0\n", "u.item", 13, "duplicate movie id 3"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in ML_CASES])
def test_ml100k_bad_input_is_one_line(case, tmp_path, capsys):
    _, data, item, fault, line, fragment = case
    root = tmp_path / "data" / "ml-100k"
    root.mkdir(parents=True)
    for name, content in (("u.data", data), ("u.item", item)):
        content(root / name) if callable(content) else (root / name).write_bytes(_bytes(content))
    rc, err = cli(
        capsys, "prepare", "--dataset", "ml-100k", "--data-dir", tmp_path / "data", "--run", tmp_path / "run", *PREPARE
    )
    assert_one_error(rc, err, "prepare", root / fault, line, fragment)


def test_dataset_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ml-100k").write_text("")
    rc, err = cli(
        capsys, "prepare", "--dataset", "ml-100k", "--data-dir", tmp_path / "data", "--run", tmp_path / "run", *PREPARE
    )
    assert_one_error(rc, err, "prepare", tmp_path / "data" / "ml-100k", None, "is not a folder")


# -- LLaRA's portable splits -----------------------------------------------------------------------------------
def _llara_rows(user, items):
    return [
        {"seq": items[max(0, k - 10) : k], "len_seq": max(1, min(k, 10)), "next": items[k], "user": user}
        for k in range(len(items))
    ]


LLARA = {
    "train": "".join(json.dumps(r) + "\n" for r in _llara_rows(7, list(range(14))) + _llara_rows(8, [20, 21, 22])),
    "val": "".join(
        json.dumps(r) + "\n"
        for r in [
            {"seq": [1, 2, 3, 4], "len_seq": 4, "next": 5, "user": 30},
            {"seq": [6, 7, 8], "len_seq": 3, "next": 9, "user": 31},
        ]
    ),
    "test": json.dumps({"seq": [10, 11, 12], "len_seq": 3, "next": 30, "user": 40}) + "\n",
}
ID2NAME = "".join(f"{i}::Item {i}\n" for i in range(40))


def make_llara(root: Path, id2name: str | bytes = ID2NAME, **raw) -> Path:
    """A llara-movielens folder; ``raw[split]``: the bytes of that split's .jsonl.gz file as they are."""
    (root / "portable").mkdir(parents=True)
    (root / "id2name.txt").write_bytes(_bytes(id2name))
    for split, text in LLARA.items():
        data = raw.get(split, gzip.compress(text.encode(), mtime=0))
        (root / "portable" / f"{split}.jsonl.gz").write_bytes(data)
    return root


def _gzv(text: str | bytes) -> bytes:
    return gzip.compress(_bytes(text), mtime=0)


LLARA_CASES = [
    ("train-truncated-gz", {"train": _gzv(LLARA["train"])[:-20]}, "train.jsonl.gz", None, "truncated"),
    ("val-not-gzip", {"val": LLARA["val"].encode()}, "val.jsonl.gz", None, "not a valid gzip file"),
    (
        "test-trailing-garbage",
        {"test": _gzv(LLARA["test"]) + b"garbage"},
        "test.jsonl.gz",
        None,
        "past the end of the gzip stream",
    ),
    ("val-line-not-an-object", {"val": _gzv("[1, 2, 3]\n")}, "val.jsonl.gz", 1, "not an object"),
    ("val-not-json", {"val": _gzv('{"seq": [1, 2\n')}, "val.jsonl.gz", 1, "malformed row"),
    (
        "val-seq-is-a-string",
        {"val": _gzv('{"seq": "1234", "len_seq": 4, "next": 5, "user": 30}\n')},
        "val.jsonl.gz",
        1,
        "seq must be a list",
    ),
    (
        "val-float-item",
        {"val": _gzv('{"seq": [1, 2, 3], "len_seq": 3, "next": 5.5, "user": 30}\n')},
        "val.jsonl.gz",
        1,
        "expected an integer",
    ),
    (
        "val-unknown-item",
        {"val": _gzv('{"seq": [1, 2, 3], "len_seq": 3, "next": 99, "user": 30}\n')},
        "val.jsonl.gz",
        1,
        "unknown item id 99",
    ),
    (
        "val-invalid-utf8",
        {"val": _gzv(b'{"seq": [1, 2, 3], "len_seq": 3, "next": 5, "user": "\xff"}\n')},
        "val.jsonl.gz",
        1,
        "not valid UTF-8",
    ),
    (
        "val-every-row-too-short",
        {"val": _gzv('{"seq": [1], "len_seq": 1, "next": 5, "user": 30}\n')},
        "val.jsonl.gz",
        None,
        "no row of 1 has len_seq >= min_history",
    ),
    ("id2name-gap", {"id2name": ID2NAME.replace("7::Item 7\n", "")}, "id2name.txt", None, "id 7 is missing"),
    ("id2name-negative-id", {"id2name": ID2NAME + "-1::Minus\n"}, "id2name.txt", 41, "malformed line"),
    ("id2name-latin1", {"id2name": ID2NAME.encode() + b"40::Caf\xe9\n"}, "id2name.txt", 41, "not valid UTF-8"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in LLARA_CASES])
def test_llara_bad_input_is_one_line(case, tmp_path, capsys):
    _, raw, fault, line, fragment = case
    raw = dict(raw)
    root = make_llara(tmp_path / "data" / "llara-movielens", raw.pop("id2name", ID2NAME), **raw)
    rc, err = cli(
        capsys,
        "prepare",
        "--dataset",
        "llara-movielens",
        "--data-dir",
        tmp_path / "data",
        "--run",
        tmp_path / "run",
        *PREPARE,
    )
    path = root / fault if fault == "id2name.txt" else root / "portable" / fault
    assert_one_error(rc, err, "prepare", path, line, fragment)


def test_llara_with_bom_and_crlf_reads_the_same(tmp_path, capsys):
    runs = []
    crlf = {"\n": "\r\n"}
    variants = (
        (ID2NAME, LLARA["val"]),
        (BOM + ID2NAME.translate(str.maketrans(crlf)), BOM + LLARA["val"].translate(str.maketrans(crlf))),
    )
    for k, (id2name, val) in enumerate(variants):
        make_llara(tmp_path / f"d{k}" / "llara-movielens", id2name, val=_gzv(val))
        rc, err = cli(
            capsys,
            "prepare",
            "--dataset",
            "llara-movielens",
            "--data-dir",
            tmp_path / f"d{k}",
            "--run",
            tmp_path / f"run{k}",
            *PREPARE,
        )
        assert rc == 0, err
        runs.append(_prepared(tmp_path / f"run{k}"))
    assert runs[0] == runs[1]


# -- a prepared run folder, read back by later stages ----------------------------------------------------------
@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory):
    return _prepare_clean(tmp_path_factory.mktemp("run"))


def _gz_lines(*lines: str | bytes) -> bytes:
    return gzip.compress(b"".join(_bytes(x) + b"\n" for x in lines), mtime=0)


SEQ = '{"user": "a", "items": [0, 1, 2, 3], "times": [0, 1, 2, 3]}'
SAMPLE = (
    '{"user": "a", "history": [0, 1, 2, 3], "target": 5, "candidates": [5, 6, 7, 8, 9], "split": "test", "seed": 0}'
)

# (id, command, file under prepared/, its new bytes, line or None, fragment)
RUN_CASES = [
    ("meta-not-json", "graph", "meta.json", b'{"n_items": 12,', None, "not valid JSON"),
    ("meta-a-list", "graph", "meta.json", b"[1, 2]", None, "not a prepare meta.json"),
    (
        "meta-n-items-a-string",
        "graph",
        "meta.json",
        b'{"n_items": "12", "seeds": [0]}',
        None,
        "not a prepare meta.json",
    ),
    ("meta-a-folder", "graph", "meta.json", _folder, None, "is a folder"),
    ("sequences-truncated-gz", "graph", "train_sequences.jsonl.gz", _gz_lines(SEQ, SEQ)[:-9], None, "truncated"),
    ("sequences-not-gzip", "graph", "train_sequences.jsonl.gz", (SEQ + "\n").encode(), None, "not a valid gzip file"),
    ("sequences-trailing-garbage", "graph", "train_sequences.jsonl.gz", _gz_lines(SEQ) + b"xyz", None, "past the end"),
    (
        "sequences-line-not-an-object",
        "graph",
        "train_sequences.jsonl.gz",
        _gz_lines(SEQ, "[1, 2]"),
        2,
        "expected a JSON object",
    ),
    (
        "sequences-not-json",
        "graph",
        "train_sequences.jsonl.gz",
        _gz_lines(SEQ, '{"user": "b",'),
        2,
        "malformed JSON line",
    ),
    (
        "sequences-item-out-of-range",
        "graph",
        "train_sequences.jsonl.gz",
        _gz_lines(SEQ.replace('[0, 1, 2, 3], "times', '[0, 1, 2, 99], "times')),
        1,
        "outside the catalogue",
    ),
    (
        "sequences-time-beyond-int64",
        "graph",
        "train_sequences.jsonl.gz",
        _gz_lines(SEQ.replace("2, 3]}", "2, 9223372036854775808]}")),
        1,
        "'times'",
    ),
    (
        "sequences-times-length",
        "graph",
        "train_sequences.jsonl.gz",
        _gz_lines(SEQ.replace("2, 3]}", "2]}")),
        1,
        "'times'",
    ),
    (
        "sequences-invalid-utf8",
        "graph",
        "train_sequences.jsonl.gz",
        _gz_lines(SEQ.encode().replace(b'"a"', b'"\xff"')),
        1,
        "not valid UTF-8",
    ),
    (
        "samples-missing-target",
        "baseline",
        "test.seed0.jsonl.gz",
        _gz_lines(SAMPLE.replace('"target": 5, ', "")),
        1,
        "'target'",
    ),
    (
        "samples-target-not-a-candidate",
        "baseline",
        "test.seed0.jsonl.gz",
        _gz_lines(SAMPLE.replace('"target": 5', '"target": 4')),
        1,
        "among the candidates",
    ),
    (
        "samples-float-item",
        "baseline",
        "test.seed0.jsonl.gz",
        _gz_lines(SAMPLE.replace("[0, 1, 2, 3]", "[0, 1.5, 2, 3]")),
        1,
        "list of integer item ids",
    ),
    (
        "samples-nan-item",
        "baseline",
        "test.seed0.jsonl.gz",
        _gz_lines(SAMPLE.replace("[0, 1, 2, 3]", "[0, NaN, 2, 3]")),
        1,
        "list of integer item ids",
    ),
    (
        "samples-wrong-split",
        "baseline",
        "test.seed0.jsonl.gz",
        _gz_lines(SAMPLE.replace('"split": "test"', '"split": "val"')),
        1,
        "in the file of split 'test'",
    ),
    ("samples-truncated", "baseline", "test.seed0.jsonl.gz", _gz_lines(SAMPLE, SAMPLE)[:-5], None, "truncated"),
    ("samples-a-json-string", "baseline", "test.seed0.jsonl.gz", _gz_lines('"hello"'), 1, "got a string"),
    ("samples-nul", "baseline", "test.seed0.jsonl.gz", _gz_lines(SAMPLE + "\x00"), 1, "NUL byte"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in RUN_CASES])
def test_edited_run_folder_is_one_line(case, prepared_run, tmp_path, capsys):
    _, command, name, content, line, fragment = case
    run = tmp_path / "run"
    shutil.copytree(prepared_run, run, symlinks=True)
    path = run / "prepared" / name
    path.unlink()
    content(path) if callable(content) else path.write_bytes(content)
    argv = ["graph", "--run", run] if command == "graph" else ["baseline", "pop", "--run", run]
    rc, err = cli(capsys, *argv)
    assert_one_error(rc, err, command, path, line, fragment)


def test_empty_run_folder(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    rc, err = cli(capsys, "graph", "--run", tmp_path / "run")
    assert_one_error(rc, err, "graph", tmp_path / "run" / "prepared", None, "no prepared data")


def test_prepared_titles_edited_by_hand(prepared_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(prepared_run, run)
    items = run / "prepared" / "items.jsonl"
    lines = items.read_text().splitlines()
    for bad, fragment in (
        (lines[:3] + ['{"item": 3}'] + lines[4:], "'title' of item 3"),
        (lines + ['{"item": 12, "title": "one too many"}'], r"new integer id in 0\.\.11, got 12"),
        (lines + ['{"item": 0, "title": "again"}'], "'item' must be a new integer id"),
    ):
        items.write_text("\n".join(bad) + "\n")
        with pytest.raises(InputError, match=fragment) as e:
            _ = PreparedData(run / "prepared").titles
        assert str(e.value).startswith(str(items))


# -- JSON-lines readers ------------------------------------------------------------------------------------
def test_jsonl_readers_name_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    with pytest.raises(InputError, match=rf"^{path}:2: not valid UTF-8"):
        list(read_jsonl(path))
    path.write_bytes(b'{"a": 1}\n' + b"[" * 100_000 + b"\n")
    with pytest.raises(InputError, match=rf"^{path}:2: malformed JSON line"):
        list(read_jsonl(path))
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"i": 0}\n[1]\n')
    with pytest.raises(InputError, match=rf"^{log}:2: malformed line in an append-only log \(a JSON list"):
        read_log(log)
    log.write_bytes(b'{"i": 0}\n{"i": "\xff"}\n')
    with pytest.raises(InputError, match=rf"^{log}:2: malformed line in an append-only log"):
        JsonlLog(log)
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path / 'nope.jsonl'}: "):
        list(read_jsonl(tmp_path / "nope.jsonl"))
