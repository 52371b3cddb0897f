"""The registry of dataset sources: ``SOURCES[name]`` -> a :class:`Source` (where its files are, how to load them).

A dataset read from a data directory is looked up in a chain (:func:`locate_folder`): the configured
directory (``prepare.data_dir`` / ``--data-dir``), then ``$R2REC_DATA_DIR``, then ``../shared/data``, each
holding one folder per dataset; then, for ``ml-100k`` only, the copy that ``pip install --no-deps
recbole==1.2.1`` puts inside the recbole package. The first place holding the dataset's folder wins; a
folder that is there but incomplete is an error rather than a reason to look further, so a broken copy never
silently gives way to another one. Whichever place is used is recorded in the run (:class:`Located`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from r2rec.errors import ConfigError, InputError, InputNotFound
from r2rec.io import check_input

from . import csv_source, llara, movielens, recbole_atomic
from .raw import RawDataset


@dataclass(frozen=True)
class SourceOptions:
    """What a loader may need; each source uses the fields that concern it."""

    data_dirs: Sequence[tuple[str, Path]] = ()  # (label, data directory), in lookup order
    min_history: int = 3
    max_history: int = 10
    min_rating: int = 0  # ml-100k only
    interactions: Path | None = None  # csv only
    titles: Path | None = None  # csv only


@dataclass(frozen=True)
class Layout:
    """One way a dataset's files sit in a folder: which files, and how to load them from that folder."""

    files: Callable[[Path], list[Path]]
    load: Callable[[Path, SourceOptions], RawDataset]
    needs: str  # for error messages: what the folder must hold


@dataclass(frozen=True)
class Embedded:
    """A copy that an installed package carries: how to find it (without importing it) and how to get it."""

    locate: Callable[[], tuple[str, Path] | None]  # -> (label, folder) or None when not installed
    layout: Layout
    install: str


@dataclass(frozen=True)
class Located:
    """Where a dataset was found: ``label`` and ``root`` go into the run's meta and manifest."""

    label: str
    root: Path | None
    files: list[Path]
    load: Callable[[SourceOptions], RawDataset]


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    locate: Callable[[SourceOptions], Located]


_SET_BY = {"config": "prepare.data_dir / --data-dir", "env": "$R2REC_DATA_DIR"}


def _place(label: str, path: Path) -> str:
    """A place in the chain as error messages name it: the absolute folder and what put it in the chain."""
    return f"{path.resolve()} ({_SET_BY.get(label, 'default ' + label)})"


def locate_folder(
    name: str, layout: Layout, data_dirs: Sequence[tuple[str, Path]], embedded: Embedded | None = None
) -> Located:
    """The first data directory holding ``<dir>/<name>/``, else the embedded copy; one error naming every place."""
    looked: list[str] = []
    for label, directory in data_dirs:
        root = Path(directory) / name
        if not root.is_dir():
            if root.exists():
                raise InputError(
                    f"is not a folder (dataset {name!r} is looked for in {name}/ of each data directory)", root
                )
            looked.append(f"{_place(label, Path(directory))}: no {name}/ folder")
            continue
        missing = [p for p in layout.files(root) if not p.exists() and not p.is_symlink()]
        if missing:
            raise InputNotFound(
                f"missing input for dataset {name!r} ({root}, from "
                f"{_SET_BY.get(label, 'default ' + label)}, must hold {layout.needs}; "
                "complete or remove the folder)",
                missing[0],
            )
        return Located(label, root, layout.files(root), partial(layout.load, root))
    if embedded is not None:
        found = embedded.locate()
        if found is not None:
            label, root = found
            return Located(label, root, embedded.layout.files(root), lambda o: embedded.layout.load(root, o))
        looked.append("the embedded copy: not installed")
    fixes = [
        f"put {name}/ with {layout.needs} in a data directory and pass --data-dir DIR "
        "(prepare.data_dir) or set R2REC_DATA_DIR=DIR"
    ]
    if embedded is not None:
        fixes.insert(0, f"run `{embedded.install}`")
    raise InputNotFound(f"dataset {name!r} not found; looked in: {'; '.join(looked)}. To fix: {', or '.join(fixes)}")


def _in_data_dir(name: str, description: str, layout: Layout, embedded: Embedded | None = None) -> Source:
    return Source(name, description, lambda o: locate_folder(name, layout, o.data_dirs, embedded))


def _csv_files(o: SourceOptions) -> list[Path]:
    if o.interactions is None or o.titles is None:
        raise ConfigError("dataset 'csv' needs --interactions FILE (user,item,timestamp) and --titles FILE")
    return [check_input(o.interactions, "interactions file"), check_input(o.titles, "titles file")]


def _csv_locate(o: SourceOptions) -> Located:
    """csv files are named on the command line: no data directory is involved."""
    return Located(
        "files",
        None,
        _csv_files(o),
        lambda opts: csv_source.load(*_csv_files(opts), min_history=opts.min_history, max_history=opts.max_history),
    )


def _llara(name: str, what: str) -> Source:
    layout = Layout(
        llara.files,
        lambda root, o: llara.load(name, root, min_history=o.min_history, max_history=o.max_history),
        "id2name.txt and portable/{train,val,test}.jsonl.gz (LLaRA's split as JSON lines)",
    )
    return _in_data_dir(name, f"LLaRA's user-disjoint {what} split (portable/*.jsonl.gz)", layout)


_GROUPLENS_ML100K = Layout(
    movielens.files,
    lambda root, o: movielens.load(root, min_history=o.min_history, max_history=o.max_history, min_rating=o.min_rating),
    "GroupLens' u.data and u.item",
)
_RECBOLE_ML100K = Embedded(
    # Looked up at call time, so the locator can be replaced (tests, other installs).
    locate=lambda: recbole_atomic.locate(),
    layout=Layout(
        recbole_atomic.files,
        lambda root, o: recbole_atomic.load(
            root, min_history=o.min_history, max_history=o.max_history, min_rating=o.min_rating
        ),
        "RecBole's ml-100k.inter and ml-100k.item",
    ),
    install=recbole_atomic.INSTALL_HINT,
)

SOURCES: dict[str, Source] = {
    "llara-movielens": _llara("llara-movielens", "MovieLens-100K"),
    "llara-lastfm": _llara("llara-lastfm", "LastFM"),
    "ml-100k": _in_data_dir(
        "ml-100k",
        "raw MovieLens 100K, per-user temporal leave-one-out over all 943 users "
        "(GroupLens files from the data directory, else RecBole's embedded copy)",
        _GROUPLENS_ML100K,
        _RECBOLE_ML100K,
    ),
    "csv": Source(
        "csv", "any user,item,timestamp CSV plus a titles file, per-user temporal leave-one-out", _csv_locate
    ),
}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"unknown dataset {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]
