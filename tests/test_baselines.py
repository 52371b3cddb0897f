"""Classical baselines: registry, transition scores by hand, shapes, learning a pattern, seeding, stopping."""

from __future__ import annotations

import numpy as np
import pytest

from r2rec.baselines import BASELINES, make_recommender
from r2rec.baselines.base import pad_histories, val_hit_rate
from r2rec.baselines.synthetic import write_synthetic_prepared
from r2rec.baselines.trainer import next_item_examples
from r2rec.signals import transition_matrix, transition_scores

# Small, fast settings for the neural models on the synthetic data (one thread: the CPU is shared).
FAST = [
    "progress=false",
    "threads=1",
    "hidden=32",
    "batch_size=32",
    "lr=0.005",
    "dropout=0.1",
    "max_epochs=40",
    "patience=6",
]
ALL = ["random", "pop", "transition", "cooc", "sasrec", "gru4rec"]


def _make(name):
    return make_recommender(name, overrides=FAST if name in ("sasrec", "gru4rec") else [])


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    """40 users walking i -> i+1 over 50 items, leave-one-out val/test, 2 candidate seeds."""
    return write_synthetic_prepared(tmp_path_factory.mktemp("pattern"))


@pytest.fixture(scope="module")
def fitted(pattern):
    return {name: _make(name).fit(pattern, seed=0) for name in ALL}


def test_registry_and_config_errors():
    assert set(ALL) <= set(BASELINES) and "evidence" in BASELINES
    assert all(BASELINES[name].name == name for name in BASELINES)
    with pytest.raises(ValueError, match="unknown baseline 'nope'"):
        make_recommender("nope")
    with pytest.raises(ValueError, match="unknown key"):
        make_recommender("sasrec", overrides=["hiden=3"])
    with pytest.raises(ValueError, match="expected int"):
        make_recommender("sasrec", overrides=["hidden=big"])
    m = make_recommender("transition", overrides=["decay=0.5", "window=2"])
    assert (m.config.decay, m.config.window) == (0.5, 2)
    assert make_recommender("cooc").config.window == 1000  # transition, order-free


def test_transition_scores_hand_checked():
    # Followers within 2 steps, the 2-step one weighing 0.5:
    #   [0,1,2]: 0->1 (1), 1->2 (1), 0->2 (0.5);  [1,2]: 1->2 (1);  [0,2]: 0->2 (1)
    #   => T[0,1] = 1, T[1,2] = 2, T[0,2] = 1.5
    T = transition_matrix([[0, 1, 2], [1, 2], [0, 2]], n_items=4, window=2, gap_decay=0.5, normalize=False)
    assert T.toarray().tolist() == [[0, 1, 1.5, 0], [0, 0, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    # History [0, 1]: item 1 is newest (weight 1), item 0 one step older (weight decay = 0.5).
    #   score(2) = T[1,2] + 0.5 * T[0,2] = 2 + 0.75;  score(1) = T[1,1] + 0.5 * T[0,1] = 0.5;  score(3) = 0
    s = transition_scores(T, [[0, 1]], [[2, 1, 3]], decay=0.5)
    np.testing.assert_allclose(s, [[2.75, 0.5, 0.0]])
    # Row-normalised: T[0,:] / 2.5, T[1,:] / 2  =>  score(2) = 1 + 0.5 * 0.6 = 1.3, score(1) = 0.5 * 0.4 = 0.2
    Tn = transition_matrix([[0, 1, 2], [1, 2], [0, 2]], n_items=4, window=2, gap_decay=0.5, normalize=True)
    np.testing.assert_allclose(transition_scores(Tn, [[0, 1]], [[2, 1, 3]], decay=0.5), [[1.3, 0.2, 0.0]])
    # max_history=1 keeps only the newest item; empty history and unknown ids score 0.
    np.testing.assert_allclose(transition_scores(T, [[0, 1]], [[2, 1, 3]], decay=0.5, max_history=1), [[2.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        transition_scores(T, [[], [9, 1]], [[2, 1, 3], [2, 99, -1]], decay=0.5), [[0, 0, 0], [2.0, 0, 0]]
    )


def test_transition_scores_chunking_matches_one_pass():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 30, size=rng.integers(2, 15)).tolist() for _ in range(50)]
    T = transition_matrix(seqs, 30, window=3)
    hist = [rng.integers(0, 30, size=rng.integers(1, 11)).tolist() for _ in range(37)]
    cands = rng.integers(0, 30, size=(37, 5))
    np.testing.assert_allclose(transition_scores(T, hist, cands, chunk=4), transition_scores(T, hist, cands))


def test_transition_rejects_bad_input():
    with pytest.raises(ValueError, match="window"):
        transition_matrix([[0, 1]], 3, window=0)
    with pytest.raises(ValueError, match="outside the catalogue"):
        transition_matrix([[0, 5]], 3)
    with pytest.raises(ValueError, match="histories"):
        transition_scores(transition_matrix([[0, 1]], 3), [[0]], [[1], [2]])


def test_next_item_examples_and_padding():
    X, y = next_item_examples([[5, 6, 7], [8]], max_len=2)
    # ids shifted by +1 (0 = padding), left-padded; [8] is too short for an example.
    assert X.tolist() == [[0, 6], [6, 7]] and y.tolist() == [6, 7]
    assert pad_histories([[1, 2, 3], [4]], 2, align="left").tolist() == [[3, 4], [0, 5]]
    assert pad_histories([[1, 2, 3], [4]], 2, align="right").tolist() == [[3, 4], [5, 0]]


def test_val_hit_rate_counts_ties_fractionally(pattern):
    val = pattern.samples("val", 0)
    flat = val_hit_rate(np.zeros((len(val), 20)), val)
    assert flat["hr1"] == pytest.approx(1 / 20)
    oracle = np.array([[1.0 if c == s.target else 0.0 for c in s.candidates] for s in val])
    assert val_hit_rate(oracle, val) == {"hr1": 1.0, "mrr": 1.0}


@pytest.mark.parametrize("name", ALL)
def test_fit_and_score_shapes(name, fitted, pattern):
    model = fitted[name]
    for split in ("val", "test"):
        samples = pattern.samples(split, 1)
        scores = model.score(samples)
        assert scores.shape == (len(samples), 20)
        assert np.isfinite(scores).all()
    assert model.score([]).shape[0] == 0


@pytest.mark.parametrize("name", ALL)
def test_score_before_fit_raises(name):
    with pytest.raises(RuntimeError, match="before fit"):
        _make(name).score([])


def test_learns_the_pattern(fitted, pattern):
    """Item i is always followed by i+1: sequence models must find it; popularity cannot."""
    test = pattern.samples("test", 1)
    hr = {name: val_hit_rate(fitted[name].score(test), test)["hr1"] for name in ALL}
    assert hr["transition"] == 1.0
    assert hr["sasrec"] >= 0.8, hr
    assert hr["gru4rec"] >= 0.8, hr
    # Chance is 0.05 for random and pop (every walk covers the items about evenly).
    assert hr["random"] <= 0.25 and hr["pop"] <= 0.25, hr
    # Early stopping recorded the val curve of the first seed.
    info = fitted["sasrec"].fit_info
    assert info["val_seed"] == 0 and info["best_val_hr1"] == max(c["val_hr1"] for c in info["curve"])


def _curve(model):
    """The parts of the fit's curve a seed must fix (the timings are the machine's)."""
    return [(c["epoch"], c["loss"], c["val_hr1"], c["val_mrr"]) for c in model.fit_info["curve"]]


@pytest.mark.parametrize("name", ["random", "sasrec", "gru4rec"])
def test_seeded_runs_are_identical(name, fitted, pattern):
    test = pattern.samples("test", 0)
    model = _make(name).fit(pattern, seed=0)
    again = model.score(test)
    np.testing.assert_array_equal(fitted[name].score(test), again)
    if name == "random":
        assert not np.array_equal(again, _make(name).fit(pattern, seed=1).score(test))
    else:
        assert _curve(model) == _curve(fitted[name])


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_fit_does_not_depend_on_thread_count(name, pattern):
    """Batches large enough for torch to split its kernels over threads; 1 and 2 threads, same bits."""
    import torch

    cfg = ["progress=false", "hidden=32", "batch_size=256", "max_epochs=3", "patience=3"]
    fits = [make_recommender(name, overrides=[*cfg, f"threads={t}"]).fit(pattern, seed=3) for t in (1, 2)]
    assert _curve(fits[0]) == _curve(fits[1])
    test = pattern.samples("test", 0)
    np.testing.assert_array_equal(fits[0].score(test), fits[1].score(test))
    # The fit's thread count and deterministic mode are scoped to the fit.
    assert not torch.are_deterministic_algorithms_enabled()


def test_sasrec_layer_norm_matches_torch_and_ignores_threads():
    import torch

    from r2rec.baselines.sasrec import LayerNorm

    torch.manual_seed(0)
    ln, ref = LayerNorm(64), torch.nn.LayerNorm(64)
    with torch.no_grad():
        for p in (ln.weight, ln.bias):
            p.normal_()
        ref.load_state_dict(ln.state_dict())
    x, g = torch.randn(256, 10, 64), torch.randn(256, 10, 64)
    torch.testing.assert_close(ln(x), ref(x))
    grads = []
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ln.zero_grad()
            ln(x).backward(g)
            grads.append([ln.weight.grad.clone(), ln.bias.grad.clone()])
    finally:
        torch.set_num_threads(saved)
    for a, b in zip(*grads):
        assert torch.equal(a, b)


# One training step's gradients with 1 and 2 threads, in a fresh process (the kernels are picked at start-up).
_STEP_GRADS = """
import torch
from r2rec.baselines import make_recommender
from r2rec.baselines.base import pad_histories
for name in ("sasrec", "gru4rec"):
    torch.manual_seed(0)
    model = make_recommender(name)
    net = model.build_net(300)
    histories = [torch.randint(0, 300, (1 + i % 10,)).tolist() for i in range(256)]
    x = torch.from_numpy(pad_histories(histories, 10, align=model.align))
    y = torch.randint(0, 300, (256,))
    grads = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(1)
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    bad = [n for (n, _), a, b in zip(net.named_parameters(), *grads) if not torch.equal(a, b)]
    assert not bad, (name, torch.backends.cpu.get_cpu_capability(), bad)
"""


@pytest.mark.parametrize("capability", ["avx2", "default"])
def test_gradients_do_not_depend_on_thread_count_with_other_kernels(capability):
    """Machines without AVX-512 run other kernels; torch's fused softmax backward depended on threads there."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-c", _STEP_GRADS], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_stops_by_patience_or_max_epochs(name, pattern):
    """Val HR@1 on the pattern reaches its ceiling within a few epochs; then patience, not time, stops the fit."""
    info = make_recommender(name, overrides=[*FAST, "max_epochs=40", "patience=1"]).fit(pattern, seed=0).fit_info
    assert info["stopped_by"] == "patience" and info["epochs_run"] < 40
    assert info["epochs_run"] == info["best_epoch"] + 1 == len(info["curve"])
    info = make_recommender(name, overrides=[*FAST, "max_epochs=2", "patience=10"]).fit(pattern, seed=0).fit_info
    assert info["stopped_by"] == "max_epochs" and info["epochs_run"] == 2
    assert (info["max_epochs"], info["patience"]) == (2, 10)


def test_removed_wall_clock_budget_is_a_clear_error():
    from r2rec.baselines.trainer import reject_removed_keys

    for values, overrides in (({"max_minutes": 9}, []), (None, ["max_minutes=9"])):
        with pytest.raises(ValueError, match="max_minutes: the wall-clock budget is gone.*max_epochs and patience"):
            reject_removed_keys(values, overrides)
    reject_removed_keys({"max_epochs": 3}, ["patience=2"])
    with pytest.raises(ValueError, match="unknown key"):
        make_recommender("sasrec", overrides=["max_minutes=9"])


def test_leave_user_out_scores_equal_a_matrix_fit_without_that_user():
    from r2rec.signals import leave_user_out_scores, transition_matrix, transition_scores

    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 30, size=rng.integers(5, 40)).tolist() for _ in range(50)]
    for window in (10, 1000):  # the transition baseline and the order-free cooc variant
        counts = transition_matrix(seqs, 30, window=window, normalize=False)
        for u in range(5):
            without = transition_matrix(seqs[:u] + seqs[u + 1 :], 30, window=window)
            h, c = seqs[u][:8], list(range(30))
            np.testing.assert_allclose(
                leave_user_out_scores(counts, h, c, seqs[u], window=window),
                transition_scores(without, [h], [c])[0],
                atol=1e-12,
            )
    # a user whose transitions are the whole evidence leaves nothing behind
    alone = transition_matrix([[1, 2, 3]], 5, normalize=False)
    assert not leave_user_out_scores(alone, [1], [2, 3], [1, 2, 3]).any()
