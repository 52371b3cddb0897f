"""RecBole's embedded MovieLens-100K and the data-directory chain (config, env, ../shared/data, embedded)."""

from __future__ import annotations

import importlib.util
import json
import random
import sys

import pytest

from r2rec.cli import main
from r2rec.config import build, data_dir
from r2rec.data import movielens, recbole_atomic
from r2rec.data.prepare import PrepareConfig, prepare
from r2rec.data.sources import SourceOptions, get_source
from r2rec.data.titles import read_u_item
from r2rec.io import sha256_file

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
# (movie id, RecBole title, release_year, u.item title): articles, a "(V)" suffix, the yearless movie.
MOVIES = [
    (1, "Toy Story", "1995", "Toy Story (1995)"),
    (2, "Usual Suspects, The", "1995", "Usual Suspects, The (1995)"),
    (
        3,
        "Land Before Time III: The Time of the Great Giving (1995)",
        "V",
        "Land Before Time III: The Time of the Great Giving (1995) (V)",
    ),
    (4, "unkonwn", "unkonwn", "unknown"),
] + [(m, f"Movie {m}", str(1950 + m), f"Movie {m} ({1950 + m})") for m in range(5, 31)]


def _ratings(n_users: int = 8, seed: int = 0) -> list[tuple[int, int, int, int]]:
    """(user, movie, rating, timestamp) rows: every user has 6..12 distinct movies, with timestamp ties."""
    rng = random.Random(seed)
    rows = []
    for user in range(1, n_users + 1):
        for movie in rng.sample(range(1, len(MOVIES) + 1), rng.randint(6, 12)):
            rows.append((user, movie, rng.randint(1, 5), 880_000_000 + rng.randint(0, 5)))
    return rows


def write_recbole(root, ratings=None, movies=MOVIES):
    """A RecBole-format ml-100k folder (ml-100k.inter + ml-100k.item) in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in ratings or _ratings())
    (root / "ml-100k.inter").write_text(INTER_HEADER + lines, encoding="utf-8")
    (root / "ml-100k.item").write_text(
        ITEM_HEADER + "".join(f"{m}\t{title}\t{year}\tDrama\n" for m, title, year, _ in movies), encoding="utf-8"
    )
    return root


def write_grouplens(root, ratings=None, movies=MOVIES):
    """The same data as GroupLens files (u.data + u.item) in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in ratings or _ratings()))
    (root / "u.item").write_text(
        "".join(f"{m}|{raw}|01-Jan-1995||http://x|0\n" for m, _, _, raw in movies), encoding="latin-1"
    )
    return root


# -- the loader -----------------------------------------------------------------------------------------


def test_loader_reads_a_recbole_folder(tmp_path):
    ds = recbole_atomic.load(write_recbole(tmp_path / "ml-100k"))
    ds.validate()
    assert ds.name == "ml-100k" and ds.n_items == len(MOVIES)
    assert ds.titles[0] == "Toy Story" and ds.titles[1] == "The Usual Suspects"  # movie id - 1, LLaRA's rule
    # LLaRA's rule cuts 7 characters whatever they are, as it does on u.item's "... (1995) (V)".
    assert ds.titles[2] == "Land Before Time III: The Time of the Great Giving (19"
    assert ds.titles[3] == "Untitled item 3" and ds.untitled == [3]
    assert len(ds.val) == len(ds.test) == 8
    assert sum(len(s.items) for s in ds.train_sequences) + 2 * 8 == len(_ratings())


def test_loader_matches_the_grouplens_loader(tmp_path):
    rb = recbole_atomic.load(write_recbole(tmp_path / "rb"), min_rating=3)
    gl = movielens.load(write_grouplens(tmp_path / "gl"), min_rating=3)
    assert rb.titles == gl.titles and rb.untitled == gl.untitled and rb.dropped == gl.dropped
    assert rb.train_sequences == gl.train_sequences
    assert (rb.train, rb.val, rb.test) == (gl.train, gl.val, gl.test)


def test_title_rebuild():
    assert recbole_atomic.grouplens_title(2, "Usual Suspects, The", "1995") == "Usual Suspects, The (1995)"
    assert recbole_atomic.grouplens_title(267, "unkonwn", "unkonwn") == "unkonwn"
    assert recbole_atomic.grouplens_title(1635, "Two Friends", "1986") == "Two Friends (1986) "  # u.item's space


def test_header_columns_in_any_order(tmp_path):
    root = write_recbole(tmp_path / "ml-100k")
    inter = root / "ml-100k.inter"
    swapped = ["timestamp:float\trating:float\titem_id:token\tuser_id:token\textra:float"]
    for line in inter.read_text().splitlines()[1:]:
        u, m, r, t = line.split("\t")
        swapped.append(f"{t}\t{r}.0\t{m}\t{u}\t0.5")
    inter.write_text("\n".join(swapped) + "\n")
    ratings = list(recbole_atomic.read_inter(inter))
    first = _ratings()[0]
    assert ratings[0] == (2, *first)


@pytest.mark.parametrize(
    "header",
    [
        "user_id:token\titem_id:token\trating:float\n",  # no timestamp
        "user_id\titem_id\trating\ttimestamp\n",
    ],
)  # no types
def test_bad_header_names_the_file(tmp_path, header):
    root = write_recbole(tmp_path / "ml-100k")
    inter = root / "ml-100k.inter"
    inter.write_text(header + "1\t1\t3\t5\n")
    with pytest.raises(ValueError, match=rf"{inter}:1: not a RecBole atomic header"):
        recbole_atomic.load(root)


@pytest.mark.parametrize(
    "bad, fault",
    [
        ("7\t3\t4", "malformed line (3 tab-separated fields, the header has 4)"),
        ("7\t3\t3.5\t880000000", "malformed line (expected integer"),
        ("7\t99\t3\t880000000", "unknown item id 99"),
        ("1\tx\t3\t880000000", "malformed line (expected integer"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, fault):
    root = write_recbole(tmp_path / "ml-100k")
    inter = root / "ml-100k.inter"
    lines = inter.read_text().splitlines()
    lines.insert(3, bad)  # file line 4
    inter.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"^{inter}:4: ") as e:
        recbole_atomic.load(root)
    assert fault in str(e.value)


def test_malformed_item_line_and_duplicates(tmp_path):
    root = write_recbole(tmp_path / "ml-100k")
    item = root / "ml-100k.item"
    item.write_text(item.read_text() + "x1\tBad\t1995\tDrama\n")
    with pytest.raises(ValueError, match=rf"{item}:{len(MOVIES) + 2}: malformed line \(item_id 'x1'"):
        recbole_atomic.read_item(item)
    item.write_text(ITEM_HEADER + "1\tA\t1995\tDrama\n1\tB\t1995\tDrama\n")
    with pytest.raises(ValueError, match=rf"{item}:3: duplicate item id 1"):
        recbole_atomic.read_item(item)
    item.write_text("")
    with pytest.raises(ValueError, match=rf"{item}: empty file"):
        recbole_atomic.read_item(item)


# -- the data-directory chain ---------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Empty config, env and ../shared/data directories and a fake embedded copy; the cwd makes the default real."""
    dirs = {k: tmp_path / k for k in ("config", "env", "shared/data", "cwd", "embedded")}
    for d in dirs.values():
        d.mkdir(parents=True)
    monkeypatch.chdir(dirs["cwd"])  # ../shared/data is now tmp_path/shared/data
    monkeypatch.setenv("R2REC_DATA_DIR", str(dirs["env"]))
    embedded = write_recbole(dirs["embedded"] / "ml-100k")
    monkeypatch.setattr(recbole_atomic, "locate", lambda: ("embedded:recbole-test", embedded))
    return dirs


def _located(config_dir=None, dataset="ml-100k"):
    from r2rec.config import data_dirs

    return get_source(dataset).locate(SourceOptions(data_dirs=data_dirs(config_dir)))


def test_resolution_order(places, monkeypatch):
    assert _located(places["config"]).label == "embedded:recbole-test"
    write_grouplens(places["shared/data"] / "ml-100k")
    assert _located(places["config"]).label == "../shared/data"
    write_grouplens(places["env"] / "ml-100k")
    found = _located(places["config"])
    assert (found.label, found.root) == ("env", places["env"] / "ml-100k")
    assert [p.name for p in found.files] == ["u.data", "u.item"]
    write_grouplens(places["config"] / "ml-100k")
    assert _located(places["config"]).label == "config"
    monkeypatch.delenv("R2REC_DATA_DIR")
    assert _located().label == "../shared/data"


def test_embedded_copy_only_for_ml100k(places, monkeypatch):
    with pytest.raises(FileNotFoundError) as e:
        _located(places["config"], dataset="llara-movielens")
    assert "embedded copy" not in str(e.value) and "recbole" not in str(e.value)


def test_incomplete_folder_is_an_error_not_a_fallback(places):
    root = write_grouplens(places["env"] / "ml-100k")
    (root / "u.item").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{root / 'u.item'}: missing input for dataset 'ml-100k'"):
        _located(places["config"])


def test_not_found_anywhere_lists_every_place(places, monkeypatch, tmp_path):
    monkeypatch.setattr(recbole_atomic, "locate", lambda: None)
    with pytest.raises(FileNotFoundError) as e:
        _located(places["config"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("dataset 'ml-100k' not found")
    for where in (places["config"], places["env"], (tmp_path / "shared" / "data").resolve()):
        assert str(where) in msg
    assert "prepare.data_dir / --data-dir" in msg and "$R2REC_DATA_DIR" in msg and "default ../shared/data" in msg
    assert "embedded copy" in msg and "pip install --no-deps recbole==1.2.1" in msg and "R2REC_DATA_DIR=DIR" in msg
    rc = main(["prepare", "--dataset", "ml-100k", "--run", str(tmp_path / "run")])
    assert rc == 2


def test_prepare_records_where_the_data_came_from(places, tmp_path, capsys):
    cfg = build(PrepareConfig, {"dataset": "ml-100k", "seeds": [0], "num_candidates": 5})
    data = prepare(cfg, tmp_path / "run")
    root = places["embedded"] / "ml-100k"
    expected = {"from": "embedded:recbole-test", "path": str(root.resolve())}
    assert data.meta["data"] == expected
    assert "prepare: ml-100k from embedded:recbole-test" in capsys.readouterr().err  # progress goes to stderr
    manifest = json.loads((tmp_path / "run" / "manifests" / "prepare.json").read_text())
    assert manifest["data"] == expected
    hashes = {str((root / n).resolve()): sha256_file(root / n) for n in ("ml-100k.inter", "ml-100k.item")}
    assert manifest["inputs"] == hashes and data.meta["sources"] == hashes
    # The GroupLens copy of the same data in the data directory wins, and gives the same samples.
    write_grouplens(places["config"] / "ml-100k")
    cfg2 = build(
        PrepareConfig, {"dataset": "ml-100k", "seeds": [0], "num_candidates": 5, "data_dir": str(places["config"])}
    )
    other = prepare(cfg2, tmp_path / "run2")
    assert other.meta["data"]["from"] == "config"
    for split in ("train", "val", "test"):
        assert other.samples(split, 0) == data.samples(split, 0)
    assert other.titles == data.titles


# -- the real files -------------------------------------------------------------------------------------


def test_installed_recbole_copy(monkeypatch):
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed (pip install --no-deps recbole==1.2.1)")
    found = recbole_atomic.locate()
    assert found is not None, "recbole is installed but has no dataset_example/ml-100k"
    label, root = found
    assert label.startswith("embedded:recbole-")
    ratings = list(recbole_atomic.read_inter(root / "ml-100k.inter"))
    assert len(ratings) == 100_000 and len({r[1] for r in ratings}) == 943
    ds = recbole_atomic.load(root)
    assert ds.n_items == 1682 and ds.titles[11] == "The Usual Suspects" and ds.untitled == [266]
    assert len(ds.val) == len(ds.test) == 943
    assert sum(len(s.items) for s in ds.train_sequences) + 2 * 943 == 100_000
    assert "recbole" not in sys.modules  # found and read, never imported


def test_installed_copy_matches_grouplens():
    root = data_dir() / "ml-100k"
    if importlib.util.find_spec("recbole") is None or not (root / "u.item").exists():
        pytest.skip("needs both recbole and GroupLens' ml-100k in the data directory")
    _, embedded = recbole_atomic.locate()
    assert recbole_atomic.read_item(embedded / "ml-100k.item") == read_u_item(root / "u.item")
    rb, gl = recbole_atomic.load(embedded), movielens.load(root)
    assert rb.titles == gl.titles and rb.train_sequences == gl.train_sequences
    assert (rb.train, rb.val, rb.test) == (gl.train, gl.val, gl.test)
