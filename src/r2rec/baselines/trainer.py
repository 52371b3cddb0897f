"""Training loop shared by the neural sequential baselines (SASRec, GRU4Rec).

Training data: every position ``k >= min_history`` of every train sequence gives one example
``(items[k - max_len : k] -> items[k])``; the loss is cross-entropy over the full catalogue (as LLaRA trains
its SASRec/GRU4Rec). Early stopping: after each epoch, HR@1 on the frozen val candidates of the first prepared
seed (ties broken by val MRR); the best weights are kept in memory and restored at the end.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from r2rec.baselines.base import Recommender, candidate_matrix, pad_histories, val_hit_rate
from r2rec.data.schema import PreparedData, Sample


@dataclass
class NeuralConfig:
    """Settings shared by the neural baselines.

    max_len:      history items the model reads (the newest ``max_len``; the protocol shows 10).
    hidden:       embedding and hidden size.
    n_blocks:     transformer blocks (SASRec) or GRU layers (GRU4Rec).
    dropout:      dropout on embeddings and inside blocks.
    lr, weight_decay: Adam settings.
    batch_size:   training batch size.
    max_epochs:   upper bound on epochs.
    patience:     stop after this many epochs without a better val HR@1 (MRR breaks ties). Generous because
                  the LLaRA val sets are small (94 / 122 users): HR@1 moves by +-0.04 from noise alone.
    min_history:  shortest history that makes a training example (1 = every position after the first).
    threads:      torch CPU threads.
    max_minutes:  wall-clock safety budget for training; the best epoch so far is kept when it runs out
                  (``fit_info["stopped_by"] == "time"``; such a fit depends on machine speed).
    progress:     show a tqdm bar over epochs.
    """

    max_len: int = 10
    hidden: int = 64
    n_blocks: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 10
    min_history: int = 1
    threads: int = 2
    max_minutes: float = 9.0
    progress: bool = True


def next_item_examples(sequences: Sequence[Sequence[int]], max_len: int,
                       min_history: int = 1) -> tuple[np.ndarray, np.ndarray]:
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
    def fit(self, prepared: PreparedData, seed: int = 0) -> "NeuralRecommender":
        import torch
        from tqdm.auto import tqdm

        c = self.config
        torch.manual_seed(seed)
        torch.set_num_threads(c.threads)
        rng = np.random.default_rng(seed)
        self.n_items = prepared.n_items

        seqs = [s.items for s in prepared.train_sequences()]
        X, y = next_item_examples(seqs, c.max_len, c.min_history)
        if len(y) == 0:
            raise ValueError(f"{prepared.root}: no training examples (train sequences shorter than "
                             f"min_history + 1 = {c.min_history + 1})")
        if self.align == "right":
            X = _left_to_right(X)
        # Kept so the leakage test can check exactly what the model was trained on.
        self.train_inputs_, self.train_targets_ = X, y

        # Early stopping reads the val samples of one fixed seed; their targets are read only by val_hit_rate.
        val_seed = prepared.seeds[0]
        val = prepared.samples("val", val_seed)

        self.net = self.build_net(self.n_items)
        opt = torch.optim.Adam(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        best = (-1.0, -1.0)
        best_state, best_epoch, bad_epochs = None, 0, 0
        history = []
        stopped_by = "max_epochs"
        start = time.time()
        bar = tqdm(range(1, c.max_epochs + 1), desc=f"{self.name} fit", disable=not c.progress, leave=False)
        for epoch in bar:
            t_epoch, cpu_epoch = time.time(), time.process_time()
            self.net.train()
            order = torch.from_numpy(rng.permutation(len(yt)))
            total, n_seen = 0.0, 0
            for i in range(0, len(order), c.batch_size):
                idx = order[i:i + c.batch_size]
                logits = self.net(Xt[idx])
                loss = torch.nn.functional.cross_entropy(logits, yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                n_seen += len(idx)
            # Wall and process CPU time (all threads) of the training pass: on a shared CPU the wall time
            # grows with other jobs' load, the CPU time much less.
            train_seconds, train_cpu = time.time() - t_epoch, time.process_time() - cpu_epoch
            metric = val_hit_rate(self.score(val), val) if val else {"hr1": 0.0, "mrr": 0.0}
            history.append({"epoch": epoch, "loss": total / n_seen, "val_hr1": metric["hr1"],
                            "val_mrr": metric["mrr"], "train_seconds": round(train_seconds, 3),
                            "train_cpu_seconds": round(train_cpu, 3)})
            bar.set_postfix(loss=f"{total / n_seen:.3f}", val_hr1=f"{metric['hr1']:.3f}")
            if (metric["hr1"], metric["mrr"]) > best:
                best = (metric["hr1"], metric["mrr"])
                best_state = copy.deepcopy(self.net.state_dict())
                best_epoch, bad_epochs = epoch, 0
            else:
                bad_epochs += 1
            if bad_epochs >= c.patience:
                stopped_by = "patience"
                break
            if time.time() - start > 60 * c.max_minutes:
                stopped_by = "time"
                break
        bar.close()
        self.net.load_state_dict(best_state)
        self.net.eval()
        self.seed = seed
        self.fit_info = {
            "train_examples": int(len(y)), "epochs_run": len(history), "best_epoch": best_epoch,
            "best_val_hr1": best[0], "best_val_mrr": best[1], "val_seed": val_seed, "stopped_by": stopped_by,
            "fit_seconds": round(time.time() - start, 2), "curve": history,
        }
        return self

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
                logits = self.net(torch.from_numpy(X[i:i + batch_size]))
                out.append(torch.gather(logits, 1, safe[i:i + batch_size]).double().numpy())
        self.net.train(was_training)
        # An id outside the catalogue cannot be recommended: a score below any logit (finite, so JSON-safe).
        return np.where(ok, np.concatenate(out), -1e9)


def _left_to_right(X: np.ndarray) -> np.ndarray:
    """Move each row's non-zero (real) items to the front, keeping their order."""
    L = X.shape[1]
    n = (X > 0).sum(axis=1)
    # Rotating a left-padded row left by (L - n) brings its n real items to the front, pads to the back.
    return np.take_along_axis(X, (np.arange(L)[None, :] + (L - n)[:, None]) % L, axis=1)
