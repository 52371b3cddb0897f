"""Retrieval over the whole catalogue: a classical model's top ``k`` items for a history, and its saved weights.

A :class:`Retriever` wraps one fitted baseline (:data:`r2rec.baselines.BASELINES`) and scores **every** catalogue
item for a history (the frozen 20 candidates play no part). :meth:`Retriever.top_k` returns the best ``k`` items
that are not excluded (the history, and whatever else the user consumed), best first, ties broken by the lower
item id. This is the first stage of whole-catalogue recommendation: ``r2rec recommend`` / ``serve`` without
candidates and ``r2rec catalogue`` hand the retrieved ``k`` to the LLM, which re-ranks them.

The neural baselines (SASRec, GRU4Rec) take minutes to fit, so a fit is saved in the run and reused:

    <run>/baselines/<method>/model.safetensors   the network's weights (safetensors; never pickle)
    <run>/baselines/<method>/model.json          what the weights are: baseline name, config, fit seed, catalogue
                                                 size, sha256 of the train sequences and of the val file early
                                                 stopping read, sha256 of the weights file, the fit's facts

The baseline stage (:func:`r2rec.baselines.stage.run_baseline`) writes them after each neural fit; a retriever
loads them when every recorded input still matches (same data, config and seed), else it fits the model the way
the stage does and saves it. ``model.json`` is written last, so a fit interrupted while saving is refitted, and a
weights file whose sha256 differs from the one recorded is not loaded.

Scores read only the train sequences (and, for the neural models' early stopping, the val candidates of the
first prepared seed), never a test target.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from r2rec.baselines.base import Recommender, make_recommender
from r2rec.data.schema import PreparedData, Sample, samples_path
from r2rec.io import atomic_write_bytes, atomic_write_json, sha256_file
from r2rec.runs import RunDir

log = logging.getLogger(__name__)

NEURAL = ("sasrec", "gru4rec")
WEIGHTS, INFO = "model.safetensors", "model.json"
FORMAT = 1
# Users scored per call: [chunk, n_items] float64 scores at a time.
_CHUNK = 256
# NeuralConfig fields that do not change what a fit learns (bit-identical across thread counts; a display switch).
_NOT_IDENTITY = ("threads", "progress")
# A split name no prepared sample has: the scoring samples of a retriever are not samples of the run.
_SPLIT = "catalogue"


def model_dir(run_dir: str | Path, method: str) -> Path:
    """Where the fitted model ``method`` of a run is saved: ``<run>/baselines/<method>``."""
    if not method or any(c in method for c in "/\\") or method.startswith("."):
        raise ValueError(f"method name {method!r}: must be non-empty, without path separators, not start with '.'")
    return Path(run_dir) / "baselines" / method


def _identity(prepared: PreparedData, model: Recommender, name: str, seed: int) -> dict:
    """What a saved fit depends on: a saved model is reused only when all of it matches."""
    val = samples_path(prepared.root, "val", prepared.seeds[0])
    return {
        "format": FORMAT,
        "baseline": name,
        # Settings that change neither the fit nor its scores (threads, the progress bar) are left out.
        "config": {k: v for k, v in asdict(model.config).items() if k not in _NOT_IDENTITY},
        "seed": int(seed),
        "n_items": prepared.n_items,
        "train_sha256": sha256_file(prepared.root / "train_sequences.jsonl.gz"),
        "val_sha256": sha256_file(val) if val.exists() else None,
    }


def save_fitted(model: Recommender, run_dir: str | Path, method: str | None = None) -> Path | None:
    """Save a fitted neural baseline of ``run_dir`` (weights + ``model.json``); ``None`` for other baselines.

    The count-based baselines refit in seconds and are not saved.
    """
    from safetensors.torch import save

    from r2rec.baselines.trainer import NeuralRecommender

    if not isinstance(model, NeuralRecommender):
        return None
    if getattr(model, "net", None) is None or model.seed is None:
        raise RuntimeError(f"{type(model).__name__}: save_fitted called before fit")
    run = RunDir(run_dir)
    prepared = PreparedData(run.prepared)
    out = model_dir(run.root, method or model.name)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    weights = atomic_write_bytes(out / WEIGHTS, save(state, metadata={"baseline": model.name}))
    info = {
        **_identity(prepared, model, model.name, model.seed),
        "method": method or model.name,
        "weights_sha256": sha256_file(weights),
        "fit_info": model.fit_info,
    }
    atomic_write_json(out / INFO, info)  # last: the commit point
    log.info(f"[retrieval] saved the fitted {model.name} to {out}")
    return out


def load_fitted(
    run_dir: str | Path,
    name: str,
    method: str | None = None,
    values: dict | None = None,
    overrides: Sequence[str] | None = None,
    seed: int | None = None,
) -> Recommender | None:
    """The saved fit of baseline ``name`` (config from ``values`` + ``overrides``, fit seed ``seed``, default the
    first prepared seed), or ``None`` when none is saved or it no longer matches (logged with the reason)."""
    from safetensors.torch import load_file

    run = RunDir(run_dir)
    prepared = PreparedData(run.prepared)
    folder = model_dir(run.root, method or name)
    if not (folder / INFO).exists():
        return None
    model = make_recommender(name, values, list(overrides or []))
    seed = prepared.seeds[0] if seed is None else int(seed)
    try:
        saved = json.loads((folder / INFO).read_text())
    except (OSError, ValueError) as e:
        log.warning(f"[retrieval] {folder / INFO}: unreadable ({type(e).__name__}); refitting")
        return None
    if isinstance(saved.get("config"), dict):
        saved["config"] = {k: v for k, v in saved["config"].items() if k not in _NOT_IDENTITY}
    want = json.loads(json.dumps(_identity(prepared, model, name, seed)))
    stale = sorted(k for k in want if saved.get(k) != want[k])
    if stale:
        log.info(f"[retrieval] {folder}: saved for other inputs ({', '.join(stale)} differ); refitting")
        return None
    if not (folder / WEIGHTS).exists() or sha256_file(folder / WEIGHTS) != saved.get("weights_sha256"):
        log.warning(f"[retrieval] {folder / WEIGHTS}: missing or not the weights model.json records; refitting")
        return None
    model.n_items = prepared.n_items  # type: ignore[attr-defined]
    model.net = model.build_net(prepared.n_items)  # type: ignore[attr-defined]
    model.net.load_state_dict(load_file(folder / WEIGHTS, device="cpu"), strict=True)  # type: ignore[attr-defined]
    model.net.eval()  # type: ignore[attr-defined]
    model.seed = seed
    model.fit_info = dict(saved.get("fit_info") or {}, loaded_from=str(folder))
    return model


def saved_models(run_dir: str | Path) -> dict[str, dict]:
    """``{method: model.json}`` of every fitted model saved in the run (unreadable ones left out)."""
    out = {}
    for info in sorted((Path(run_dir) / "baselines").glob(f"*/{INFO}")):
        try:
            out[info.parent.name] = json.loads(info.read_text())
        except (OSError, ValueError):
            continue
    return out


class Retriever:
    """A fitted classical model that scores the whole catalogue for a history.

    ``source`` says where the model came from: ``loaded`` (saved fit), ``fitted`` (fitted now) or ``given``.
    """

    def __init__(self, model: Recommender, name: str, n_items: int, source: str = "given"):
        if model.seed is None:
            raise RuntimeError(f"retriever {name}: the model is not fitted")
        self.model, self.name, self.n_items, self.source = model, name, int(n_items), source
        self._items = np.arange(self.n_items, dtype=np.int64)

    @classmethod
    def for_run(
        cls,
        run_dir: str | Path,
        name: str = "sasrec",
        values: dict | None = None,
        overrides: Sequence[str] | None = None,
        seed: int | None = None,
        method: str | None = None,
        save: bool = True,
    ) -> Retriever:
        """Baseline ``name`` of the run: its saved fit when that still matches, else fitted now (and, for a neural
        model with ``save``, saved for the next time). Config: ``values`` (a YAML ``baselines.<name>`` section) plus
        ``key=value`` ``overrides``; ``seed``: the fit seed (default the first prepared seed, as the stage does)."""
        from r2rec.baselines.base import BASELINES

        if name not in BASELINES:
            raise ValueError(f"unknown retriever {name!r}; known: {', '.join(BASELINES)}")
        run = RunDir(run_dir)
        prepared = PreparedData(run.prepared)
        seed = prepared.seeds[0] if seed is None else int(seed)
        if name in NEURAL:
            from r2rec.baselines.trainer import reject_removed_keys

            reject_removed_keys(values, overrides)
            model = load_fitted(run.root, name, method, values, overrides, seed)
            if model is not None:
                log.info(f"[retrieval] {name}: loaded the saved fit from {model_dir(run.root, method or name)}")
                return cls(model, name, prepared.n_items, "loaded")
            log.info(f"[retrieval] {name}: no matching saved fit in {run.root}; fitting (minutes for a neural model)")
        model = make_recommender(name, values, list(overrides or []))
        model.fit(prepared, seed=seed)
        if save:
            save_fitted(model, run.root, method)
        return cls(model, name, prepared.n_items, "fitted")

    def describe(self) -> dict:
        info = {"model": self.name, "source": self.source, "seed": self.model.seed}
        for k in ("best_epoch", "best_val_hr1", "loaded_from"):
            if k in self.model.fit_info:
                info[k] = self.model.fit_info[k]
        return info

    # -- scores ----------------------------------------------------------------------------------------
    def scores(self, histories: Sequence[Sequence[int]], users: Sequence[str] | None = None) -> np.ndarray:
        """``float64 [len(histories), n_items]``: every catalogue item's score for each history (higher = better).

        ``users`` names the histories (the ``random`` baseline keys its draws by user; the others ignore it).
        """
        users = list(users) if users is not None else [f"history{i}" for i in range(len(histories))]
        if len(users) != len(histories):
            raise ValueError(f"{len(users)} users for {len(histories)} histories")
        out = np.empty((len(histories), self.n_items), dtype=np.float64)
        every = tuple(int(i) for i in self._items)
        for start in range(0, len(histories), _CHUNK):
            probes = [
                Sample(str(u), tuple(int(i) for i in h), every[0], every, _SPLIT, 0)
                for u, h in zip(users[start : start + _CHUNK], histories[start : start + _CHUNK])
            ]
            out[start : start + len(probes)] = self.model.score(probes)
        return out

    def top_k(
        self,
        histories: Sequence[Sequence[int]],
        k: int,
        exclude: Sequence[Sequence[int]] | None = None,
        users: Sequence[str] | None = None,
        scores: np.ndarray | None = None,
    ) -> tuple[list[list[int]], list[list[float]]]:
        """The best ``k`` items for each history, best first (ties: lower item id first), and their scores.

        Never returned: the history's own items and those of ``exclude`` (per history: what else the user
        consumed). Fewer than ``k`` come back only when fewer items are left. ``scores``: precomputed
        :meth:`scores` of the same histories.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if exclude is not None and len(exclude) != len(histories):
            raise ValueError(f"{len(exclude)} exclusion lists for {len(histories)} histories")
        S = self.scores(histories, users) if scores is None else np.asarray(scores, dtype=np.float64)
        items, values = [], []
        for r, h in enumerate(histories):
            banned = excluded_mask(self.n_items, h, exclude[r] if exclude is not None else ())
            pool = self._items[~banned]
            order = np.lexsort((pool, -S[r, pool]))[:k]  # last key first: score descending, then item id
            items.append([int(i) for i in pool[order]])
            values.append([float(S[r, i]) for i in pool[order]])
        return items, values


def excluded_mask(n_items: int, history: Sequence[int], exclude: Sequence[int] = ()) -> np.ndarray:
    """``bool [n_items]``: True for the items of ``history`` and ``exclude`` (ids outside the catalogue ignored)."""
    mask = np.zeros(n_items, dtype=bool)
    ids = np.fromiter((int(i) for i in (*history, *exclude)), dtype=np.int64)
    mask[ids[(ids >= 0) & (ids < n_items)]] = True
    return mask


def full_rank_counts(
    scores: np.ndarray, targets: Sequence[int] | np.ndarray, banned: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``scores [n, n_items]``: ``(above, tied, ranked)``: the allowed items scored strictly above the
    target, the other allowed items tied with it, and whether the target is allowed at all (``banned [n, n_items]``
    marks what may not be recommended; a banned target cannot be ranked, i.e. it is a miss)."""
    S = np.asarray(scores, dtype=np.float64)
    rows = np.arange(len(S))
    t = np.asarray(targets, dtype=np.int64)
    ts = S[rows, t][:, None]
    allowed = ~banned
    above = ((S > ts) & allowed).sum(1)
    tied = ((S == ts) & allowed).sum(1) - 1
    ranked = allowed[rows, t]
    return above, np.maximum(tied, 0), ranked
