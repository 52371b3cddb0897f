"""The pipeline's skip/rerun logic and the config loader (no LLM: prepare + cheap baselines on a synthetic csv)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from r2rec.config import build
from r2rec.pipeline import PipelineError, run_pipeline


def _write_csv(tmp_path, n_users=30, n_items=60, per_user=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = ["user,item,timestamp"]
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, size=per_user, replace=False)):
            rows.append(f"u{u},i{i},{t}")
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "titles.csv").write_text("item,title\n" + "\n".join(f"i{i},Item {i}" for i in range(n_items)) + "\n")


def _config(tmp_path, methods=("random", "pop")):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        f"run: {tmp_path / 'run'}\n"
        f"prepare: {{dataset: csv, interactions: {tmp_path / 'log.csv'}, titles: {tmp_path / 'titles.csv'}, "
        f"seeds: [0, 1], num_candidates: 10}}\n"
        f"baselines: {{methods: {json.dumps(list(methods))}}}\n"
    )
    return cfg


def test_stages_run_once_then_skip_and_a_changed_section_reruns(tmp_path, capsys):
    _write_csv(tmp_path)
    cfg = _config(tmp_path)
    root = run_pipeline(cfg, only=["prepare", "baselines"])
    assert {p.name for p in (root / "results").glob("*.json")} == {"random.json", "pop.json"}
    first = json.loads((root / "manifests" / "pipeline.json").read_text())
    capsys.readouterr()
    run_pipeline(cfg, only=["prepare", "baselines"])
    out = capsys.readouterr().err
    assert out.count("up to date, skipped") == 2
    # A changed baselines section reruns baselines only; prepare's key is unchanged.
    cfg.write_text(cfg.read_text().replace('["random", "pop"]', '["random", "pop", "transition"]'))
    run_pipeline(cfg, only=["prepare", "baselines"])
    out = capsys.readouterr().err
    second = json.loads((root / "manifests" / "pipeline.json").read_text())
    assert second["prepare"] == first["prepare"] and second["baselines"] != first["baselines"]
    assert "[1/2] prepare: up to date, skipped" in out and (root / "results" / "transition.json").exists()


def test_force_reruns_the_stage_itself_not_only_its_pipeline_entry(tmp_path):
    _write_csv(tmp_path)
    cfg = _config(tmp_path)
    root = run_pipeline(cfg, only=["prepare", "baselines"])
    result = root / "results" / "pop.json"
    before = result.stat().st_mtime_ns
    run_pipeline(cfg, only=["prepare", "baselines"])
    assert result.stat().st_mtime_ns == before  # skipped
    run_pipeline(cfg, only=["prepare", "baselines"], force=["baselines"])
    assert result.stat().st_mtime_ns > before  # the baseline's own manifest did not stop it


def test_a_failing_stage_is_named_with_its_section(tmp_path, monkeypatch):
    from r2rec.baselines import stage as baseline_stage

    _write_csv(tmp_path)
    cfg = _config(tmp_path, methods=("no-such-baseline",))
    with pytest.raises(ValueError, match="baselines.methods: unknown name 'no-such-baseline'"):
        run_pipeline(cfg, only=["prepare", "baselines"])  # refused up front: no stage ran
    assert not (tmp_path / "run" / "manifests" / "pipeline.json").exists()

    def fail(*a, **k):
        raise RuntimeError("the fit diverged")

    monkeypatch.setattr(baseline_stage, "run_baseline", fail)
    cfg = _config(tmp_path)
    with pytest.raises(PipelineError, match="stage 'baselines' failed .*section 'baselines'.*diverged"):
        run_pipeline(cfg, only=["prepare", "baselines"])
    state = json.loads((tmp_path / "run" / "manifests" / "pipeline.json").read_text())
    assert "prepare" in state and "baselines" not in state  # the failed stage is not marked done


def test_unknown_section_is_an_error(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("prepair: {}\n")
    with pytest.raises(ValueError, match="unknown section"):
        run_pipeline(cfg)


def test_the_pipeline_refuses_to_run_in_every_process_of_a_launcher(tmp_path, monkeypatch):
    _write_csv(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="runs as one process"):
        run_pipeline(_config(tmp_path), only=["prepare"])
    assert not (tmp_path / "run").exists()  # nothing ran
    monkeypatch.setenv("WORLD_SIZE", "1")
    run_pipeline(_config(tmp_path), only=["prepare"])
    assert (tmp_path / "run" / "prepared" / "meta.json").exists()


@dataclass
class _Cfg:
    n: int = 1
    rate: float | None = None
    names: list[str] | None = None
    flag: bool = False


def test_build_coerces_overrides_and_rejects_unknown_keys():
    cfg = build(_Cfg, {"n": "3"}, ["rate=0.5", "names=[a, b]", "flag=true"])
    assert cfg == _Cfg(n=3, rate=0.5, names=["a", "b"], flag=True)
    with pytest.raises(ValueError, match="unknown key"):
        build(_Cfg, {"nn": 1})
    with pytest.raises(ValueError, match="expected int"):
        build(_Cfg, {"n": "three"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc/self/statm")
def test_release_memory_returns_freed_heap_to_the_os():
    import torch

    from r2rec.pipeline import _release_memory

    def rss_mib():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    t = torch.empty(4 * 2**20)
    del t  # a freed 16 MiB mapping raises glibc's mmap threshold: the 1 MiB blocks below come from the heap
    xs = [torch.ones(256, 1024) for _ in range(400)]
    keep = xs[-1:]  # the last block pins the top of the heap, as a live tensor does after a stage
    high = rss_mib()
    del xs
    _release_memory()
    assert high - rss_mib() > 250, (high, rss_mib())
    assert keep[0].sum() == 256 * 1024
