"""End-to-end SFT on the tiny random-weight model: it trains, logs, masks the prompt, resumes."""

import csv
import json

import pytest

from r2rec.config import build
from r2rec.io import sha256_file
from r2rec.train.sft import SFTConfig, load_traces, run_sft


def _cfg(tiny_model_dir, **kw):
    base = dict(
        model=str(tiny_model_dir),
        max_steps=2,
        batch_size=2,
        save_every=2,
        logging_steps=1,
        eval_every=0,
        precision="fp32",
        max_length=2048,
        learning_rate=1e-3,
    )
    base.update(kw)
    return build(SFTConfig, base)


def test_sft_step_changes_adapter_and_logs_loss(tiny_model_dir, synthetic_train_run):
    import torch
    from safetensors.torch import load_file

    final = run_sft(synthetic_train_run, _cfg(tiny_model_dir))
    weights = load_file(str(final / "adapter_model.safetensors"))
    # LoRA B starts at zero: any non-zero B means the optimiser moved the adapter.
    b = [v for k, v in weights.items() if "lora_B" in k]
    assert b and any(torch.count_nonzero(v) > 0 for v in b)
    rows = list(csv.DictReader(open(synthetic_train_run / "checkpoints/sft/log.csv")))
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    assert losses and all(loss > 0 for loss in losses)
    summary = json.loads((final / "train_summary.json").read_text())
    assert summary["global_step"] == 2


def _label_texts(trainer, n=2):
    """Decode what the loss sees (labels != -100) for the first n training examples."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    tok = trainer.processing_class
    return [tok.decode(ids[labels != -100]) for ids, labels in zip(batch["input_ids"], batch["labels"])]


@pytest.mark.parametrize("variant", ["iot", "direct"])
def test_loss_mask_covers_only_the_completion(tiny_model_dir, synthetic_train_run, variant):
    from r2rec.runs import RunDir
    from r2rec.train.sft import make_trainer

    cfg = _cfg(tiny_model_dir, variant=variant, max_train_samples=0)
    trainer, _ = make_trainer(RunDir(synthetic_train_run), cfg)
    for text in _label_texts(trainer):
        assert "You are a recommender" not in text and "Candidates:" not in text  # no prompt token
        assert text.strip().startswith("<think>" if variant == "iot" else "<answer>")
        assert "</answer>" in text
        if variant == "direct":
            assert "<think>" not in text
    recs = load_traces(synthetic_train_run / "thoughts/sft.jsonl.gz", variant)
    assert all(r["completion"][0]["content"].startswith("<think>" if variant == "iot" else "<answer>") for r in recs)


def test_direct_variant_trains_and_logs_val_hr1(tiny_model_dir, synthetic_train_run):
    final = run_sft(
        synthetic_train_run,
        _cfg(tiny_model_dir, variant="direct", eval_every=1, eval_samples=4, prompt={"context_chains": 0}),
    )
    assert final == synthetic_train_run / "checkpoints/sft-direct/final"
    assert (final / "adapter_config.json").exists()
    val = [json.loads(line) for line in open(synthetic_train_run / "checkpoints/sft-direct/val.jsonl")]
    assert [v["step"] for v in val] == [0, 1, 2]  # before training, every eval_every steps
    for v in val:
        assert 0.0 <= v["val_hr1"] <= 1.0 and 0.0 <= v["val_top_first"] <= 1.0
        # HR@1 counts 1/4 steps on 4 samples: a fraction of the subset, never a made-up number.
        assert (v["val_hr1"] * 4) == int(v["val_hr1"] * 4)
    rows = list(csv.DictReader(open(synthetic_train_run / "checkpoints/sft-direct/log.csv")))
    assert any(r.get("val_hr1") for r in rows)  # the curve also reaches the CSV log


def test_curriculum_rebuilds_prompts_with_fewer_candidates(tiny_model_dir, synthetic_train_run):
    from r2rec.runs import RunDir
    from r2rec.train.sft import make_trainer

    cfg = _cfg(tiny_model_dir, num_candidates=3, prompt={"context_chains": 0})
    trainer, _ = make_trainer(RunDir(synthetic_train_run), cfg)
    for ex in trainer.train_dataset:
        user = ex["prompt"][-1]["content"]
        listed = user.split("chose next:")[1].strip().splitlines()
        listed = [x for x in listed if x.startswith("- ")]
        assert len(listed) == 3
        answer = ex["completion"][0]["content"].split("<answer>")[1].split("</answer>")[0]
        assert f"- {answer}" in listed  # the target always stays


def test_resume_continues_from_the_saved_step(tiny_model_dir, synthetic_train_run):
    import shutil

    from safetensors.torch import load_file

    cfg = _cfg(
        tiny_model_dir,
        max_steps=4,
        save_every=2,
        save_total_limit=3,
        eval_every=2,
        eval_samples=2,
        eval_max_new_tokens=4,
    )
    out = synthetic_train_run / "checkpoints/sft"
    final = run_sft(synthetic_train_run, cfg)
    straight = load_file(str(final / "adapter_model.safetensors"))
    # Simulate an interruption after step 2: the step-4 checkpoint, the final adapter and the manifest are gone.
    shutil.rmtree(out / "checkpoint-4")
    shutil.rmtree(final)
    (synthetic_train_run / "manifests/sft.json").unlink()
    final = run_sft(synthetic_train_run, cfg)
    summary = json.loads((final / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 4
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "log.csv")) if r.get("loss")]
    assert steps == [1, 2, 3, 4]  # the resumed run logged steps 3 and 4, it did not restart at 1
    # val points: 0, 2, 4 of the first run; the resumed run re-evaluated only step 4 (its files were lost)
    val_steps = [json.loads(line)["step"] for line in open(out / "val.jsonl")]
    assert val_steps == [0, 2, 4, 4]
    resumed = load_file(str(final / "adapter_model.safetensors"))
    # Same data order, RNG and optimiser state after resuming: the same adapter as the uninterrupted run.
    import torch

    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-4, atol=1e-6)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="variant"):
        build(SFTConfig, {"variant": "cot"})
    with pytest.raises(ValueError, match="unknown key"):
        build(SFTConfig, {}, ["lora_rank=8"])


def test_cli_reports_bad_overrides_in_one_line(capsys, synthetic_train_run):
    from r2rec.cli import main

    assert main(["sft", "--run", str(synthetic_train_run), "lora_rank=8"]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) ['lora_rank']" in err and "Traceback" not in err


def test_new_traces_start_over_instead_of_resuming(tiny_model_dir, synthetic_train_run, capsys):
    """A checkpoint (and its val points) made from other traces, e.g. before the prompt changed, is not resumed."""
    import gzip
    import shutil

    cfg = _cfg(
        tiny_model_dir,
        max_steps=2,
        save_every=1,
        save_total_limit=3,
        eval_every=2,
        eval_samples=2,
        eval_max_new_tokens=4,
    )
    out = synthetic_train_run / "checkpoints/sft"
    final = run_sft(synthetic_train_run, cfg)
    assert [json.loads(line)["step"] for line in open(out / "val.jsonl")] == [0, 2]
    # Interrupted after step 1, then the traces change (a new prompt order rebuilds them): the same settings.
    shutil.rmtree(out / "checkpoint-2")
    shutil.rmtree(final)
    traces = synthetic_train_run / "thoughts/sft.jsonl.gz"
    lines = gzip.open(traces, "rt").read().splitlines()
    with gzip.open(traces, "wt") as f:
        f.write("\n".join(lines[::-1]) + "\n")
    capsys.readouterr()
    final = run_sft(synthetic_train_run, cfg)
    assert "settings or inputs changed; starting over" in capsys.readouterr().err
    summary = json.loads((final / "train_summary.json").read_text())
    assert summary["resumed_from"] is None and summary["global_step"] == 2
    assert [json.loads(line)["step"] for line in open(out / "val.jsonl")] == [0, 2]  # no point of the old run
    saved = json.loads((out / "config.json").read_text())
    assert saved["inputs"] == {"sft.jsonl.gz": sha256_file(traces)}


def test_keep_best_val_makes_the_val_selected_step_final(tiny_model_dir, synthetic_train_run):
    cfg = _cfg(tiny_model_dir, max_steps=3, eval_every=1, eval_samples=4, eval_max_new_tokens=4, keep="best_val")
    final = run_sft(synthetic_train_run, cfg)
    points = [json.loads(line) for line in open(synthetic_train_run / "checkpoints/sft/val.jsonl")]
    best = max(p["val_hr1"] for p in points)
    want = min(p["step"] for p in points if p["val_hr1"] == best)
    summary = json.loads((final / "train_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["kept"]["step"] == want
    assert (final / "adapter_model.safetensors").exists() and (final / "tokenizer_config.json").exists()


def test_manifest_skips_a_finished_stage(tiny_model_dir, synthetic_train_run, capsys):
    cfg = _cfg(tiny_model_dir, max_steps=1)
    run_sft(synthetic_train_run, cfg)
    capsys.readouterr()
    run_sft(synthetic_train_run, cfg)
    assert "up to date" in capsys.readouterr().err


def test_in_context_filter_keeps_traces_that_restate_a_shown_chain():
    from r2rec.grammar import format_completion
    from r2rec.prompting import build_messages
    from r2rec.train.sft import context_citations, restates_context

    shown = 'user 7 watched "Heat (1995)" and later "Fargo (1996)"'
    msgs = build_messages(
        ["Heat (1995)"], ["Fargo (1996)", "Toy Story (1995)"], [shown + " (shares 3 of the user's items)"]
    )
    assert context_citations(msgs) == [shown]
    cites_shown = format_completion([f"Then {shown}, so Fargo."], "Fargo (1996)")
    cites_other = format_completion(['Then user 9 watched "Heat (1995)" and later "Fargo (1996)".'], "Fargo (1996)")

    def ex(c):
        return {"prompt": msgs, "completion": [{"role": "assistant", "content": c}]}

    assert restates_context(ex(cites_shown)) and not restates_context(ex(cites_other))
    # The direct ablation is filtered on its record's reasoning, so it keeps the same samples.
    direct = {
        "prompt": msgs,
        "completion": [{"role": "assistant", "content": "<answer>Fargo (1996)</answer>"}],
        "reasoning": cites_shown,
    }
    assert restates_context(direct)
    no_context = build_messages(["Heat (1995)"], ["Fargo (1996)"])
    assert not restates_context({"prompt": no_context, "completion": [{"role": "assistant", "content": cites_shown}]})
