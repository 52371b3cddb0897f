"""A run's precomputed prior: per prepared sample, one score per candidate from the best classical model.

The ``baselines`` stage (:mod:`r2rec.baselines.prior`) fits the model and writes the scores; the prompt builder
(``candidate_order: prior``) and the fusion of LLM and prior scores (:mod:`r2rec.eval.fusion`) read them here.
The reader lives in this layer, below both of its users, and knows nothing of how the scores were made::

    <run>/prior/meta.json                 model, how it was chosen, folds, fit facts, HR@1 per split, and the
                                          sha256 of every score file (written last: the commit point)
    <run>/prior/{split}.seed{k}.jsonl.gz  one line per prepared sample of that split and seed, in file order:
                                          {"user", "history", "candidates", "scores"} (scores in the order of
                                          the candidates; higher = better)

Train samples' scores are cross-fitted (each comes from a model fitted without that user's sequence); val and
test scores come from the model fitted on every train sequence, as the baseline is evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from r2rec.data.schema import Sample
from r2rec.errors import InputError, InputNotFound
from r2rec.io import iter_jsonl

PRIOR_DIR = "prior"
META = "meta.json"


def prior_dir(run_root: str | Path) -> Path:
    return Path(run_root) / PRIOR_DIR


def meta_path(run_root: str | Path) -> Path:
    return prior_dir(run_root) / META


def scores_path(run_root: str | Path, split: str, seed: int) -> Path:
    return prior_dir(run_root) / f"{split}.seed{seed}.jsonl.gz"


def read_meta(run_root: str | Path) -> dict:
    """The prior's ``meta.json``; an :class:`InputNotFound` saying how to make it when absent."""
    path = meta_path(run_root)
    if not path.exists():
        raise InputNotFound(
            "no prior scores (candidate_order: prior and the prior fusion read them; the baselines stage writes "
            "them when the prompt asks for them or `baselines.prior` is set)",
            path,
        )
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise InputError(f"not valid JSON ({e}); rerun the baselines stage", path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise InputError("not a prior meta.json (no 'files'); rerun the baselines stage", path)
    return meta


class PriorScores:
    """The prior scores of a run's prepared samples: ``scores(samples) -> float64 [n, C]``.

    A sample is found by (split, seed, user, history); its stored candidates must be the sample's, in the same
    order, else the file is stale (an :class:`InputError` naming it). Files are read on first use.
    """

    def __init__(self, run_root: str | Path):
        self.root = Path(run_root)
        self.meta = read_meta(self.root)
        self._tables: dict[tuple[str, int], tuple[dict, np.ndarray, np.ndarray]] = {}

    @property
    def model(self) -> str:
        return str(self.meta.get("model", "?"))

    def _table(self, split: str, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
        key = (split, seed)
        if key not in self._tables:
            path = scores_path(self.root, split, seed)
            if path.name not in self.meta["files"]:
                raise InputError(
                    f"the prior holds no scores for split {split!r} seed {seed} (it covers the prepared samples "
                    f"only: {sorted(self.meta['files'])}); a request that is not a prepared sample cannot be "
                    "ordered by it",
                    meta_path(self.root),
                )
            index: dict[tuple[str, tuple[int, ...]], int] = {}
            cands: list[list] = []
            scores: list[list] = []
            for lineno, row in iter_jsonl(path, "prior scores"):
                c, s = row.get("candidates"), row.get("scores")
                if not isinstance(c, list) or not isinstance(s, list) or len(c) != len(s):
                    raise InputError("'candidates' and 'scores' must be lists of one length", path, lineno)
                index[(str(row.get("user")), tuple(row.get("history") or ()))] = len(cands)
                cands.append(c)
                scores.append(s)
            width = max((len(c) for c in cands), default=0)
            C = np.full((len(cands), width), -1, dtype=np.int64)
            S = np.zeros((len(cands), width), dtype=np.float64)
            for r, (c, s) in enumerate(zip(cands, scores)):
                C[r, : len(c)], S[r, : len(s)] = c, s
            self._tables[key] = (index, C, S)
        return self._tables[key]

    def scores(self, samples: Sequence[Sample]) -> np.ndarray:
        """One row per sample, one score per candidate in the sample's own order (padded with 0)."""
        width = max((len(s.candidates) for s in samples), default=0)
        out = np.zeros((len(samples), width), dtype=np.float64)
        for b, s in enumerate(samples):
            index, C, S = self._table(s.split, s.seed)
            row = index.get((s.user, tuple(s.history)))
            path = scores_path(self.root, s.split, s.seed)
            if row is None:
                raise InputError(
                    f"no prior score for user {s.user!r} with history {list(s.history)} ({s.split} seed {s.seed}); "
                    "the prior was written for other prepared samples: rerun the baselines stage",
                    path,
                )
            n = len(s.candidates)
            if C[row, :n].tolist() != list(s.candidates) or (C.shape[1] > n and C[row, n] != -1):
                raise InputError(
                    f"user {s.user!r}: the prior's candidates differ from the prepared sample's (stale prior "
                    "scores): rerun the baselines stage",
                    path,
                )
            out[b, :n] = S[row, :n]
        return out


def prior_inputs(run_root: str | Path) -> list[Path]:
    """The file that identifies a run's prior (its meta holds every score file's sha256), for manifests."""
    return [meta_path(run_root)]
