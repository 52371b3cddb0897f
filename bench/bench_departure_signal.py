"""Does the prompt say when to leave the prior's first candidate? A re-ranker that reads only what the prompt shows.

    .venv/bin/python bench/bench_departure_signal.py --run runs/llara-movielens --context-chains 1 2 3

R2Rec answers the prompt's first candidate almost always, so it scores what the prior scores. For the model to
do better it must learn, from the prompt alone, *when* the target is another candidate. This measures whether
the prompt carries that signal at all, without an LLM:

- prompts are built as the run builds them (its thoughts stage's prompt settings; ``--context-chains`` varies
  the number of chains shown), for a seeded subset of train samples (their order cross-fitted, as SFT and GRPO
  see them) and for every val sample;
- each shown candidate is described by what the prompt shows about it: its position (one-hot), whether a chain
  reaches it, and that chain's ``shares N`` and recency (how late in the shown history its start item is); a
  chain's closeness (how soon the other user went on) is left out, since the prompt's wording ("and later")
  does not show it;
- a conditional logit (softmax over the shown candidates of ``w . x``, L2-penalised, fitted by L-BFGS on the
  train prompts) picks one candidate per val prompt.

Its val HR@1 against "always the first candidate" bounds what learning from these cues can add. It reports
how often it departs from the first candidate and how often a departure is right. Two controls: its HR@1 on
the train prompts it was fitted on, and the same logit fitted on val itself (two folds by user): when that
beats the train-fitted one, val prompts carry cues that the train prompts show differently. A target the
prompt does not show counts as a miss for both. Titles are left out: a 135M model knows little about them, and
this asks what the structure of the prompt tells. Written to ``--out`` (default
``bench/results/departure_signal_<run name>.json``).
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from r2rec.config import load_yaml
from r2rec.data.schema import PreparedData, samples_path
from r2rec.hardware import cpu_model
from r2rec.prompting.builder import PromptBuilder, prompt_config
from r2rec.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]


def features(prompts, n_shown: int, histories=None, genres=None) -> tuple[np.ndarray, np.ndarray]:
    """``X [n, n_shown, d]`` and a mask of real candidates ``[n, n_shown]``. With ``genres`` (item x genre 0/1)
    and the shown ``histories``: two more features, the candidate's share of the history's genre mass and the
    share of history items that share a genre with it."""
    d = n_shown + 3 + (2 if genres is not None else 0)
    X, mask = np.zeros((len(prompts), n_shown, d)), np.zeros((len(prompts), n_shown), dtype=bool)
    for i, p in enumerate(prompts):
        chains = {int(c["i_b"]): c for c in p.chains}
        if genres is not None:
            h = genres[list(histories[i])]
            mass = h.sum(0) / max(h.sum(), 1.0)
        for j, item in enumerate(p.candidates[:n_shown]):
            mask[i, j] = True
            X[i, j, j] = 1.0
            c = chains.get(int(item))
            if c is not None:
                X[i, j, n_shown : n_shown + 3] = [1.0, np.log1p(c["n_shared"]), c["recency"]]
            if genres is not None:
                g = genres[int(item)]
                X[i, j, n_shown + 3 :] = [mass @ g / max(g.sum(), 1.0), float(((h @ g) > 0).mean())]
    return X, mask


def recbole_genres(n_items: int) -> np.ndarray:
    """Item x genre 0/1 from the ``class`` column of the ml-100k copy in the RecBole wheel (item = movie id - 1,
    as ``r2rec.data.recbole_atomic`` numbers them)."""
    from r2rec.data.recbole_atomic import locate

    found = locate()
    if found is None:
        raise SystemExit("--genres needs the recbole wheel (its dataset_example/ml-100k)")
    rows = [line.split("\t") for line in (found[1] / "ml-100k.item").read_text().splitlines()[1:]]
    names = sorted({g for r in rows for g in r[3].split()})
    out = np.zeros((n_items, len(names)))
    for r in rows:
        if int(r[0]) - 1 < n_items:
            out[int(r[0]) - 1, [names.index(g) for g in r[3].split()]] = 1.0
    return out


def fit(X: np.ndarray, mask: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Conditional logit over the shown candidates; rows whose target is not shown carry no likelihood."""
    keep = y >= 0
    X, mask, y = X[keep], mask[keep], y[keep]

    def loss(w):
        s = np.where(mask, X @ w, -np.inf)
        m = s.max(axis=1, keepdims=True)
        p = np.exp(s - m)
        z = p.sum(axis=1, keepdims=True)
        nll = -(s[np.arange(len(y)), y] - m[:, 0] - np.log(z[:, 0])).mean()
        grad_s = p / z
        grad_s[np.arange(len(y)), y] -= 1.0
        g = np.einsum("nc,ncd->d", grad_s, X) / len(y)
        return nll + l2 * w @ w, g + 2 * l2 * w

    return minimize(loss, np.zeros(X.shape[2]), jac=True, method="L-BFGS-B").x


def chained(sample, prompt) -> bool:
    """Whether a chain the prompt shows reaches the sample's target (what an in-context trace needs)."""
    return sample.target in {int(c["i_b"]) for c in prompt.chains}


def targets(samples, prompts) -> np.ndarray:
    return np.array(
        [p.candidates.index(s.target) if s.target in p.candidates else -1 for s, p in zip(samples, prompts)]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a run with prepared/, prior/, graph/ and a thoughts manifest")
    p.add_argument("--context-chains", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--chain-selection", nargs="+", default=["ranked"], help="ranked and/or strongest (PromptConfig)")
    p.add_argument("--config", help="take the prompt settings from this YAML's `prompt` section (default: the run's)")
    p.add_argument(
        "--genres",
        action="store_true",
        help="ml-100k runs: add genre-match features (the prompt does not show genres: would showing them help?)",
    )
    p.add_argument("--train-samples", type=int, default=4000)
    p.add_argument(
        "--train-positions",
        choices=["all", "last"],
        default="all",
        help="fit on train samples at every position of a train user's sequence, or only at its last one (the "
        "position val/test samples hold on the LLaRA sets)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file (default bench/results/departure_signal_<run name>.json)")
    args = p.parse_args()

    run = RunDir(args.run)
    base = (load_yaml(args.config).get("prompt") or {}) if args.config else {}
    prepared = PreparedData(run.prepared)
    genres = recbole_genres(prepared.n_items) if args.genres else None
    train = prepared.samples("train", prepared.seeds[0])
    if args.train_positions == "last":  # samples are in sequence order per user: keep each user's last
        train = list({s.user: s for s in train}.values())
    pick = np.random.default_rng(args.seed).permutation(len(train))[: args.train_samples]
    train = [train[i] for i in sorted(pick)]
    val = [
        s for k in prepared.seeds if samples_path(prepared.root, "val", k).exists() for s in prepared.samples("val", k)
    ]
    rows = []
    for cc, how in [(cc, how) for how in args.chain_selection for cc in args.context_chains]:
        t0 = time.time()
        cfg = prompt_config(run, {**base, "context_chains": cc, "chain_selection": how})
        builder = PromptBuilder(run.root, cfg, prepared=prepared)
        tp, vp = builder.build(train), builder.build(val)
        n_shown = max(len(x.candidates) for x in tp + vp)
        shown = [s.history[-cfg.max_history :] if cfg.max_history else s.history for s in train + val]
        Xt, mt = features(tp, n_shown, shown[: len(tp)], genres)
        Xv, mv = features(vp, n_shown, shown[len(tp) :], genres)
        yt, yv = targets(train, tp), targets(val, vp)
        w = fit(Xt, mt, yt)
        pick_v = np.argmax(np.where(mv, Xv @ w, -np.inf), axis=1)
        first = float(np.mean(yv == 0))
        learned = float(np.mean(pick_v == yv))
        # The same logit fitted on val itself (2 folds by user, so a user's seeds stay on one side): if it beats
        # the train-fitted one, the cues exist on val but train prompts show them differently (a shift).
        fold = np.array([zlib.crc32(str(s.user).encode()) % 2 for s in val])
        pick_cv = np.empty_like(pick_v)
        for f in (0, 1):
            wf = fit(Xv[fold != f], mv[fold != f], yv[fold != f])
            pick_cv[fold == f] = np.argmax(np.where(mv[fold == f], Xv[fold == f] @ wf, -np.inf), axis=1)
        pick_t = np.argmax(np.where(mt, Xt @ w, -np.inf), axis=1)
        departs = pick_v != 0
        row = {
            "context_chains": cc,
            "chain_selection": how,
            "train_prompts": len(tp),
            "val_prompts": len(vp),
            "train_target_first": round(float(np.mean(yt == 0)), 4),
            "train_target_shown_not_first": round(float(np.mean(yt > 0)), 4),
            "train_target_chain_shown": round(float(np.mean([chained(s, q) for s, q in zip(train, tp)])), 4),
            "val_hr1_first": round(first, 4),
            "val_hr1_learned": round(learned, 4),
            "val_departure_rate": round(float(departs.mean()), 4),
            "val_departures_right": round(float(np.mean(pick_v[departs] == yv[departs])), 4) if departs.any() else None,
            "val_target_shown": round(float(np.mean(yv >= 0)), 4),
            "val_target_chain_shown": round(float(np.mean([chained(s, q) for s, q in zip(val, vp)])), 4),
            "train_hr1_first": round(float(np.mean(yt == 0)), 4),
            "train_hr1_learned_in_sample": round(float(np.mean(pick_t == yt)), 4),
            "val_hr1_fitted_on_val_2fold": round(float(np.mean(pick_cv == yv)), 4),
            "weights": {
                **{f"pos{j + 1}": round(float(w[j]), 3) for j in range(n_shown)},
                **dict(
                    zip(["chain", "log1p_shares", "recency", "genre_mass", "genre_shared"], np.round(w[n_shown:], 3))
                ),
            },
            "seconds": round(time.time() - t0, 1),
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "weights"}), flush=True)
    out = {
        "run": str(run.root),
        "dataset": prepared.meta.get("dataset"),
        "rows": rows,
        "cpu": cpu_model(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "prompt": base or "the run's",
        "genres": bool(args.genres),
        "train_positions": args.train_positions,
        "command": f"python bench/bench_departure_signal.py --run {args.run}"
        + (f" --config {args.config}" if args.config else "")
        + " --context-chains "
        + " ".join(map(str, args.context_chains))
        + " --chain-selection "
        + " ".join(args.chain_selection)
        + (" --genres" if args.genres else "")
        + (f" --train-positions {args.train_positions}" if args.train_positions != "all" else ""),
    }
    path = Path(args.out or ROOT / "bench" / "results" / f"departure_signal_{run.root.name}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
