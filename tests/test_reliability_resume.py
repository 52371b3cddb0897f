"""Crash-safe resume: a torn checkpoint is never resumed from, a torn manifest never stops a rerun.

A checkpoint is checked before it is resumed from (r2rec.train.common.checkpoint_problem): the trainer state
parses and names its step, the weights, optimizer and scheduler are there and whole (a safetensors file as long
as its header says, torch archives with their directory), and the files have the sizes the save committed. The
newest damaged checkpoint is reported by name and removed, and the previous good one is used, or training
starts afresh. A manifest or pipeline state that cannot be read counts as absent: the stage runs again.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil

import pytest

from r2rec.train.common import CHECKPOINT_MARKER, checkpoint_commit, checkpoint_problem, last_checkpoint, resume_point
from test_train_resume import fake_checkpoint  # tests/ is on sys.path (rootdir-relative imports)


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING, logger="r2rec")
    logging.getLogger("r2rec").addHandler(caplog.handler)  # r2rec's logger does not propagate to the root
    yield caplog
    logging.getLogger("r2rec").removeHandler(caplog.handler)


def _out(tmp_path, steps=(2, 4, 6)):
    out = tmp_path / "out"
    for s in steps:
        fake_checkpoint(out / f"checkpoint-{s}", s)
    return out


def _truncate(path, keep=None):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda c: _truncate(c / "trainer_state.json"), "trainer_state.json is unreadable"),
        (lambda c: (c / "trainer_state.json").write_text(json.dumps({"global_step": 4})), "names step 4, not 6"),
        (lambda c: (c / "trainer_state.json").write_text("[]"), "names step None"),
        (lambda c: _truncate(c / "adapter_model.safetensors"), "adapter_model.safetensors"),
        (lambda c: _truncate(c / "adapter_model.safetensors", keep=5), "adapter_model.safetensors is truncated"),
        (
            lambda c: (c / "adapter_model.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"not json{}......"),
            "unreadable safetensors header",
        ),
        (lambda c: (c / "adapter_model.safetensors").unlink(), "no weights"),
        (lambda c: (c / "optimizer.pt").write_bytes(b""), "optimizer.pt is empty"),
        (lambda c: _truncate(c / "optimizer.pt"), "optimizer.pt is truncated"),
        (lambda c: (c / "scheduler.pt").unlink(), "no scheduler.pt"),
    ],
)
def test_a_damaged_newest_checkpoint_is_named_removed_and_the_previous_one_used(tmp_path, warnings, damage, why):
    out = _out(tmp_path)
    damage(out / "checkpoint-6")
    assert why in checkpoint_problem(out / "checkpoint-6")
    assert last_checkpoint(out) == str(out / "checkpoint-4")
    assert not (out / "checkpoint-6").exists()  # the resumed run saves step 6 again, into a clean folder
    text = warnings.text
    assert f"damaged checkpoint {out / 'checkpoint-6'}" in text and why in text


def test_a_committed_checkpoint_must_keep_its_sizes(tmp_path, warnings):
    out = _out(tmp_path)
    for s in (2, 4, 6):
        checkpoint_commit(out / f"checkpoint-{s}")
    marker = json.loads((out / "checkpoint-6" / CHECKPOINT_MARKER).read_text())
    assert marker["step"] == 6 and set(marker["files"]) >= {"trainer_state.json", "adapter_model.safetensors"}
    assert checkpoint_problem(out / "checkpoint-6") is None
    with open(out / "checkpoint-6" / "trainer_state.json", "a") as f:
        f.write(" ")  # still valid JSON, but not what the save wrote
    assert "the save wrote" in checkpoint_problem(out / "checkpoint-6")
    (out / "checkpoint-4" / CHECKPOINT_MARKER).write_text('{"files": ')  # a torn marker
    assert last_checkpoint(out) == str(out / "checkpoint-2")


def test_every_checkpoint_damaged_starts_afresh_and_same_settings_still_resume(tmp_path, warnings):
    cfg = {"learning_rate": 1e-4, "max_steps": 20}
    out = _out(tmp_path, steps=(2, 4))
    (out / "config.json").write_text(json.dumps(cfg))
    assert resume_point(out, cfg) == str(out / "checkpoint-4")
    for s in (2, 4):
        _truncate(out / f"checkpoint-{s}" / "trainer_state.json")
    assert resume_point(out, cfg) is None and not list(out.glob("checkpoint-*"))
    assert warnings.text.count("damaged checkpoint") == 2


def test_a_torn_config_json_starts_over_with_a_warning(tmp_path, warnings):
    cfg = {"learning_rate": 1e-4, "max_steps": 20}
    out = _out(tmp_path)
    (out / "config.json").write_text(json.dumps(cfg)[:10])
    assert resume_point(out, cfg) is None and not out.exists()
    assert "config.json is unreadable" in warnings.text


# -- the real thing: SFT on the tiny model, its newest checkpoint torn ---------------------------------------------
def _sft_cfg(tiny_model_dir):
    from r2rec.config import build
    from r2rec.train.sft import SFTConfig

    return build(
        SFTConfig,
        dict(
            model=str(tiny_model_dir),
            max_steps=4,
            batch_size=2,
            save_every=2,
            save_total_limit=3,
            logging_steps=1,
            eval_every=0,
            precision="fp32",
            max_length=2048,
            learning_rate=1e-3,
        ),
    )


def _whole_catalogue(run):
    """The shared synthetic run names items 1..30 with n_items 31: give item 0 a title where a reader wants one
    for every id (a no-op once the fixture does so itself)."""
    path = run / "prepared" / "items.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if not any(r["item"] == 0 for r in rows):
        path.write_text("".join(json.dumps(r) + "\n" for r in [{"item": 0, "title": "Movie 0 (1979)"}, *rows]))
    return run


@pytest.mark.parametrize("torn", ["trainer_state.json", "adapter_model.safetensors"])
def test_sft_resumes_from_the_previous_checkpoint_when_the_newest_is_torn(
    tiny_model_dir, synthetic_train_run, warnings, torn
):
    from r2rec.train.sft import run_sft

    run = _whole_catalogue(synthetic_train_run)
    cfg = _sft_cfg(tiny_model_dir)
    out = run / "checkpoints" / "sft"
    final = run_sft(run, cfg)
    for step in (2, 4):  # every saved checkpoint was committed, with its files' sizes
        marker = json.loads((out / f"checkpoint-{step}" / CHECKPOINT_MARKER).read_text())
        assert marker["step"] == step and marker["files"]["adapter_model.safetensors"] > 0
        assert checkpoint_problem(out / f"checkpoint-{step}") is None
    # Killed while the step-4 checkpoint was written (a torn file), before final/ and the manifest.
    shutil.rmtree(final)
    (run / "manifests" / "sft.json").unlink()
    _truncate(out / "checkpoint-4" / torn)
    final = run_sft(run, cfg)
    summary = json.loads((final / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(out / "checkpoint-2") and summary["global_step"] == 4
    assert f"damaged checkpoint {out / 'checkpoint-4'}" in warnings.text and torn in warnings.text
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "log.csv")) if r.get("loss")]
    assert steps == [1, 2, 3, 4]  # steps 3 and 4 trained again after the resume, not from step 1
    assert checkpoint_problem(out / "checkpoint-4") is None  # saved again, whole
    assert (run / "manifests" / "sft.json").exists()


# -- manifests and the pipeline state ---------------------------------------------------------------------------
def test_a_torn_manifest_is_treated_as_absent_and_the_stage_reruns(tmp_path, warnings):
    from r2rec.graph.synthetic import write_synthetic_run
    from r2rec.thoughts.stage import ThoughtsConfig, run_thoughts

    run = write_synthetic_run(tmp_path / "run", n_train_users=30, seed=3)
    cfg = ThoughtsConfig(max_samples=20)
    run_thoughts(run, cfg, progress=False)
    sft = run / "thoughts" / "sft.jsonl.gz"
    before = sft.stat().st_mtime_ns
    run_thoughts(run, cfg, progress=False)
    assert sft.stat().st_mtime_ns == before  # skipped: the manifest matches
    manifest = run / "manifests" / "thoughts.json"
    _truncate(manifest)
    stats = run_thoughts(run, cfg, progress=False)
    assert stats["attempted"] == 20 and sft.stat().st_mtime_ns > before  # ran again
    assert f"{manifest}: unreadable manifest" in warnings.text
    assert json.loads(manifest.read_text())["stage"] == "thoughts"  # rewritten whole


def test_a_torn_pipeline_state_reruns_its_stages(tmp_path, warnings):
    from r2rec.pipeline import run_pipeline

    (tmp_path / "log.csv").write_text(
        "user,item,timestamp\n" + "".join(f"u{u},i{(u + k) % 20},{k}\n" for u in range(12) for k in range(8))
    )
    (tmp_path / "titles.csv").write_text("item,title\n" + "".join(f"i{i},Item {i}\n" for i in range(20)))
    path = tmp_path / "p.yaml"
    path.write_text(
        f"run: {tmp_path / 'run'}\nprepare: {{dataset: csv, interactions: {tmp_path / 'log.csv'}, "
        f"titles: {tmp_path / 'titles.csv'}, seeds: [0], num_candidates: 5}}\n"
        "baselines: {methods: [random]}\n"
    )
    root = run_pipeline(path, only=["prepare", "baselines"])
    state = root / "manifests" / "pipeline.json"
    good = json.loads(state.read_text())
    _truncate(state)
    _truncate(root / "manifests" / "pipeline-times.json")
    run_pipeline(path, only=["prepare", "baselines"])
    assert json.loads(state.read_text()) == good
    assert f"{state} is unreadable" in warnings.text
