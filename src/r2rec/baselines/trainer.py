"""Training loop shared by the neural sequential baselines (SASRec, GRU4Rec).

Training data: every position ``k >= min_history`` of every train sequence gives one example
``(items[k - max_len : k] -> items[k])``; the loss is cross-entropy over the full catalogue (as LLaRA trains
its SASRec/GRU4Rec), so there is no negative sampling. Early stopping: after each epoch, HR@1 on the frozen val
candidates of the first prepared seed (ties broken by val MRR); the best weights are kept in memory and restored
at the end.

Reproducibility: a fit runs by epochs only (at most ``max_epochs``, fewer when val stops improving for
``patience`` epochs), never by wall clock, so a slow or busy machine runs the same epochs as a fast one. Every
random draw (initial weights, data order, dropout) comes from generators seeded by ``seed``; torch runs with
``use_deterministic_algorithms(True)`` during the fit, and SASRec avoids the two CPU kernels whose result
depended on the thread count (LayerNorm's weight gradient; softmax's backward with the AVX2 kernels; see
``r2rec.baselines.sasrec``). Checked on short fits of both models (synthetic data): train losses, val curve
and scores are bit-identical run to run, and with 1 vs 2 torch threads under each of torch's AVX-512, AVX2
and non-SIMD kernels. They are *not* bit-identical across those kernels: forcing the AVX2 ones on an AVX-512
machine (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``) moved losses and scores in the last bits
(scores by up to 1e-5 after 12 epochs: sums taken in a different vector width; the BLAS also picks its kernels
by CPU). There the val HR@1 curve, best epoch, candidate rankings and HR@1 stayed the same, but over a long fit
such differences can grow and, where two epochs' val HR@1 are close, change the chosen epoch.
``fit_info["cpu_capability"]`` records which kernels a fit used.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from r2rec.baselines.base import Recommender, candidate_matrix, pad_histories, val_hit_rate
from r2rec.config import with_overrides
from r2rec.data.schema import PreparedData, Sample

# Config fields that no longer exist, with the reason, so an old config fails with an explanation.
REMOVED_KEYS = {
    "max_minutes": "the wall-clock budget is gone: a fit stopped by time depended on the machine's speed; "
    "training now stops by epochs only (set max_epochs and patience instead)",
}


@dataclass
class NeuralConfig:
    """Settings shared by the neural baselines.

    max_len:      history items the model reads (the newest ``max_len``; the protocol shows 10).
    hidden:       embedding and hidden size.
    n_blocks:     transformer blocks (SASRec) or GRU layers (GRU4Rec).
    dropout:      dropout on embeddings and inside blocks.
    lr, weight_decay: Adam settings.
    batch_size:   training batch size.
    max_epochs:   upper bound on epochs (``fit_info["stopped_by"] == "max_epochs"`` when reached); it, not a
                  time budget, bounds a fit's cost, so each model sets it for ml-100k-sized data (about 100k
                  train examples) to take a few minutes on 2 CPU cores (see the model's config).
    patience:     stop after this many epochs without a better val HR@1 (MRR breaks ties). Generous because
                  the LLaRA val sets are small (94 / 122 users): HR@1 moves by +-0.04 from noise alone.
    min_history:  shortest history that makes a training example (1 = every position after the first).
    threads:      torch CPU threads (speed only: the result does not depend on it).
    progress:     show a tqdm bar over epochs.
    """

    max_len: int = 10
    hidden: int = 64
    n_blocks: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 40
    patience: int = 10
    min_history: int = 1
    threads: int = 2
    progress: bool = True

    def __post_init__(self):
        for name in ("max_len", "hidden", "n_blocks", "batch_size", "max_epochs", "patience", "min_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1 or self.lr <= 0 or self.weight_decay < 0 or self.threads < 0:
            raise ValueError(
                f"need 0 <= dropout < 1, lr > 0, weight_decay >= 0, threads >= 0; got dropout "
                f"{self.dropout}, lr {self.lr}, weight_decay {self.weight_decay}, threads {self.threads}"
            )


def reject_removed_keys(values: dict | None, overrides: Sequence[str] | None = None) -> None:
    """Fail on a config field that was removed, saying why, instead of the generic unknown-key error."""
    gone = sorted(set(with_overrides(values, list(overrides or []))) & set(REMOVED_KEYS))
    if gone:
        raise ValueError("; ".join(f"{k}: {REMOVED_KEYS[k]}" for k in gone))


def next_item_examples(
    sequences: Sequence[Sequence[int]], max_len: int, min_history: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """All ``(history -> next item)`` examples of the sequences.

    Returns ``X int64 [N, max_len]`` (left-padded, ids shifted by +1 so 0 is padding) and
    ``y int64 [N]`` (raw item ids).
    """
    xs, ys = [], []
    for seq in sequences:
        items = np.asarray(seq, dtype=np.int64)
        if len(items) <= min_history:
            continue
        padded = np.concatenate([np.zeros(max_len, dtype=np.int64), items + 1])
        # windows[k] = the max_len slots just before item k (padded[k : k + max_len]).
        windows = np.lib.stride_tricks.sliding_window_view(padded, max_len)[: len(items)]
        ks = np.arange(min_history, len(items))
        xs.append(windows[ks])
        ys.append(items[ks])
    if not xs:
        return np.zeros((0, max_len), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(xs), np.concatenate(ys)


class NeuralRecommender(Recommender):
    """A sequence encoder + an output layer over the catalogue, trained with full cross-entropy."""

    config_cls = NeuralConfig
    # "left": newest item in the last column (SASRec); "right": real items first (packed GRU).
    align = "left"

    def build_net(self, n_items: int):
        raise NotImplementedError

    # -- fit -------------------------------------------------------------------------------------------
    def fit(self, prepared: PreparedData, seed: int = 0) -> NeuralRecommender:
        import torch

        self.n_items = prepared.n_items
        X, y = self._examples(prepared)
        # Early stopping reads the val samples of one fixed seed; their targets are read only by val_hit_rate.
        val_seed = prepared.seeds[0]
        val = prepared.samples("val", val_seed)
        start = time.time()
        with _deterministic_torch(self.config.threads):
            rng = _seed_everything(seed)
            self.net = self.build_net(self.n_items)
            run = self._train(X, y, val, rng)
        curve = run.pop("curve")
        self.seed = seed
        self.fit_info = {
            "train_examples": int(len(y)),
            **run,
            "val_seed": val_seed,
            "max_epochs": self.config.max_epochs,
            "patience": self.config.patience,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__,
            "fit_seconds": round(time.time() - start, 2),
            "curve": curve,
        }
        return self

    def _train(self, X: np.ndarray, y: np.ndarray, val: Sequence[Sample], rng: np.random.Generator) -> dict:
        """Epochs until ``patience`` or ``max_epochs``; leaves the best val epoch's weights in ``self.net``."""
        import torch
        from tqdm.auto import tqdm

        c = self.config
        opt = torch.optim.Adam(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        best, best_state, best_epoch = (-1.0, -1.0), None, 0
        curve, stopped_by = [], "max_epochs"
        bar = tqdm(range(1, c.max_epochs + 1), desc=f"{self.name} fit", disable=not c.progress, leave=False)
        for epoch in bar:
            row = self._train_epoch(opt, Xt, yt, rng.permutation(len(yt)))
            metric = val_hit_rate(self.score(val), val) if val else {"hr1": 0.0, "mrr": 0.0}
            curve.append(
                {"epoch": epoch, "loss": row.pop("loss"), "val_hr1": metric["hr1"], "val_mrr": metric["mrr"], **row}
            )
            bar.set_postfix(loss=f"{curve[-1]['loss']:.3f}", val_hr1=f"{metric['hr1']:.3f}")
            # Without val samples (a cross-fit fold, r2rec.baselines.prior) every epoch counts as the best: a
            # fixed-epoch fit that keeps its last epoch.
            if not val or (metric["hr1"], metric["mrr"]) > best:
                best, best_epoch = (metric["hr1"], metric["mrr"]), epoch
                best_state = copy.deepcopy(self.net.state_dict())
            elif epoch - best_epoch >= c.patience:
                stopped_by = "patience"
                break
        bar.close()
        self.net.load_state_dict(best_state)
        self.net.eval()
        return {
            "epochs_run": len(curve),
            "best_epoch": best_epoch,
            "best_val_hr1": best[0],
            "best_val_mrr": best[1],
            "stopped_by": stopped_by,
            "curve": curve,
        }

    def _examples(self, prepared: PreparedData) -> tuple[np.ndarray, np.ndarray]:
        """The train examples in the layout this model reads; kept so the leakage test can check them."""
        c = self.config
        X, y = next_item_examples([s.items for s in prepared.train_sequences()], c.max_len, c.min_history)
        if len(y) == 0:
            raise ValueError(
                f"{prepared.root}: no training examples (train sequences shorter than "
                f"min_history + 1 = {c.min_history + 1})"
            )
        if self.align == "right":
            X = _left_to_right(X)
        self.train_inputs_, self.train_targets_ = X, y
        return X, y

    def _train_epoch(self, opt, Xt, yt, order: np.ndarray) -> dict:
        """One pass over the examples in ``order``; mean loss and the pass's wall and CPU seconds."""
        import torch

        t_wall, t_cpu = time.time(), time.process_time()
        self.net.train()
        perm = torch.from_numpy(order)
        total = 0.0
        for i in range(0, len(perm), self.config.batch_size):
            idx = perm[i : i + self.config.batch_size]
            loss = torch.nn.functional.cross_entropy(self.net(Xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        # Wall and process CPU time (all threads): on a shared CPU the wall time grows with other jobs' load,
        # the CPU time much less. Reported only; nothing depends on them.
        return {
            "loss": total / len(order),
            "train_seconds": round(time.time() - t_wall, 3),
            "train_cpu_seconds": round(time.process_time() - t_cpu, 3),
        }

    # -- score -----------------------------------------------------------------------------------------
    def score(self, samples: Sequence[Sample], batch_size: int = 1024) -> np.ndarray:
        import torch

        if getattr(self, "net", None) is None:
            raise RuntimeError(f"{type(self).__name__}.score called before fit")
        cands = candidate_matrix(samples)
        if cands.size == 0:
            return np.zeros(cands.shape, dtype=np.float64)
        X = pad_histories([s.history for s in samples], self.config.max_len, shift=1, align=self.align)
        ok = (cands >= 0) & (cands < self.n_items)
        safe = torch.from_numpy(np.where(ok, cands, 0))
        was_training = self.net.training
        self.net.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(X), batch_size):
                logits = self.net(torch.from_numpy(X[i : i + batch_size]))
                out.append(torch.gather(logits, 1, safe[i : i + batch_size]).double().numpy())
        self.net.train(was_training)
        # An id outside the catalogue cannot be recommended: a score below any logit (finite, so JSON-safe).
        return np.where(ok, np.concatenate(out), -1e9)


def _seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch, and return the generator of the data order, so a seed fixes the fit."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # initial weights and dropout masks
    return np.random.default_rng(seed)


@contextlib.contextmanager
def _deterministic_torch(threads: int) -> Iterator[None]:
    """Deterministic kernels and ``threads`` CPU threads for the fit, the caller's settings restored after."""
    import torch

    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])


def _left_to_right(X: np.ndarray) -> np.ndarray:
    """Move each row's non-zero (real) items to the front, keeping their order."""
    L = X.shape[1]
    n = (X > 0).sum(axis=1)
    # Rotating a left-padded row left by (L - n) brings its n real items to the front, pads to the back.
    return np.take_along_axis(X, (np.arange(L)[None, :] + (L - n)[:, None]) % L, axis=1)
