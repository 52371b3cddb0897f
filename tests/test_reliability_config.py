"""`r2rec pipeline` checks the whole config before the first stage runs.

Every case is a config that used to be accepted, or refused only when its stage started (after the stages before
it had run): now it is one ConfigError naming the config file, the section and the key, and nothing is written.
The shipped configs all pass. No LLM, no training: only config objects are built.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import pytest
import yaml

from r2rec.cli import main
from r2rec.config import build, load_yaml
from r2rec.errors import ConfigError
from r2rec.pipeline import run_pipeline, validate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _keep_log_level():
    """The CLI sets the r2rec log level from R2REC_LOG_LEVEL; later tests read INFO logs, so it is put back."""
    logger = logging.getLogger("r2rec")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture
def base(tmp_path):
    """A valid config (csv data, cheap baselines) as a dict, and a function writing it with changes."""
    (tmp_path / "log.csv").write_text(
        "user,item,timestamp\n" + "".join(f"u{u},i{i},{i}\n" for u in range(3) for i in range(6))
    )
    (tmp_path / "titles.csv").write_text("item,title\n" + "".join(f"i{i},Item {i}\n" for i in range(6)))
    cfg = {
        "run": str(tmp_path / "run"),
        "prepare": {
            "dataset": "csv",
            "interactions": str(tmp_path / "log.csv"),
            "titles": str(tmp_path / "titles.csv"),
            "seeds": [0],
            "num_candidates": 4,
        },
        "baselines": {"methods": ["random", "pop"]},
        "sft": {"max_steps": 4, "learning_rate": 1.0e-3},
    }

    def write(**sections) -> Path:
        data = {**cfg, **sections}
        data = {k: v for k, v in data.items() if v is not None}
        path = tmp_path / "x.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def _refused(path: Path, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        run_pipeline(path, **kw)
    assert not (path.parent / "run" / "prepared").exists()  # nothing ran before the fault was found
    assert not (path.parent / "run" / "manifests" / "pipeline.json").exists()
    assert err.value.path == str(path)
    return str(err.value)


def test_an_invalid_value_of_a_late_stage_stops_the_run_before_prepare(base):
    path = base(sft={"learning_rate": -1})
    assert _refused(path) == f"{path}: sft.learning_rate: must be > 0, got -1"


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"sft": {"max_steps": -5}}, "sft.max_steps: must be >= 1"),
        ({"sft_direct": {"batch_size": 0}}, "sft_direct.batch_size"),
        ({"rl": {"max_steps": "many"}}, "rl.max_steps: expected int, got 'many'"),
        ({"rl": {"num_generations": 1}}, "rl.num_generations: must be >= 2"),
        ({"rl": {"loss_type": "ppo"}}, "rl.loss_type: expected one of"),
        ({"rl": {"reward_weights": {"corect": 1.0}}}, "rl.reward_weights: unknown reward(s) ['corect']"),
        ({"sft": {"lr_scheduler": "cosin"}}, "sft.lr_scheduler: expected one of"),
        ({"sft": {"warmup_ratio": 1.5}}, "sft.warmup_ratio: must be in [0, 1)"),
        ({"sft": {"max_steps": 2.5}}, "sft.max_steps: expected int, got 2.5"),
        ({"sft": {"save_every": 0}}, "sft.save_every: must be >= 1"),
        ({"sft": {"prompt": {"context_chains": -1}}}, "sft.prompt.context_chains: must be >= 0"),
        ({"eval": {"n_bootstrap": 0}}, "eval.n_bootstrap: must be >= 1"),
        ({"eval": {"max_new_tokens": -1}}, "eval.max_new_tokens: must be >= 0"),
        ({"eval": {"split": "tset"}}, "eval.split: expected train, val or test"),
        ({"eval": {"no_context_ablation": "maybe"}}, "eval.no_context_ablation: expected a boolean"),
        ({"chains": {"batch_size": 0}}, "chains.batch_size: must be >= 1"),
        ({"thoughts": {"chunk_size": 0}}, "thoughts.chunk_size: must be >= 1"),
        ({"thoughts": {"teacher": "gpt4"}}, "thoughts.teacher: unknown teacher 'gpt4'"),
        ({"thoughts": {"teacher_options": {"concurrency": 0}}}, "thoughts.teacher_options.concurrency: must be >= 1"),
        ({"prompt": {"context_chains": -1}}, "prompt.context_chains: must be >= 0"),
        ({"prepare": {"dataset": "csv", "seeds": [0, 0]}}, "prepare.seeds: must be a non-empty list of distinct"),
        (
            {"baselines": {"methods": ["random"], "settings": {"random": {}, "transition": {"decay": 2.0}}}},
            "need 0 < gap_decay <= 1",
        ),
        ({"report": {"n_boot": 0}}, "report.n_boot: expected an int >= 1"),
        ({"graph": []}, "graph: expected a mapping"),
    ],
)
def test_types_and_ranges_of_every_section(base, sections, message):
    assert message in _refused(base(**sections))


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"sft": {"lerning_rate": 1e-4}}, "sft: unknown key(s) ['lerning_rate'] (did you mean 'learning_rate'?)"),
        ({"prepair": {}}, "unknown section 'prepair' (did you mean 'prepare'?)"),
        ({"skip": ["bogus"]}, "skip: unknown name 'bogus'"),
        ({"skip": ["sft_direct"]}, "skip: unknown name 'sft_direct' (did you mean 'sft-direct'?)"),
        ({"eval": {"models": ["bse"]}}, "eval.models: unknown name 'bse' (did you mean 'base'?)"),
        ({"baselines": {"methods": ["random", "populr"]}}, "baselines.methods: unknown name 'populr'"),
        (
            {"baselines": {"methods": ["random"], "settings": {"transition": {"windw": 3}}}},
            "baselines.settings.transition: unknown key(s) ['windw'] (did you mean 'window'?)",
        ),
        ({"baselines": {"method": ["random"]}}, "baselines: unknown key(s) ['method'] (did you mean 'methods'?)"),
        (
            {"thoughts": {"teacher_options": {"concurency": 2}}},
            "thoughts.teacher_options: unknown key(s) ['concurency'] (did you mean 'concurrency'?)",
        ),
        ({"report": {"n_trace": 2}}, "report: unknown key(s) ['n_trace'] (did you mean 'n_traces'?)"),
    ],
)
def test_unknown_keys_sections_and_stage_names_with_the_closest_known_one(base, sections, message):
    assert message in _refused(base(**sections))


def test_files_the_stages_read_must_exist_unless_this_run_writes_them(base, tmp_path):
    missing = tmp_path / "nope.csv"
    text = _refused(base(prepare={"dataset": "csv", "interactions": str(missing), "titles": str(missing)}))
    assert f"prepare.interactions: {missing} does not exist" in text
    assert "prepare.titles: required with dataset: csv" in _refused(
        base(prepare={"dataset": "csv", "interactions": str(tmp_path / "log.csv")})
    )
    # A stage whose input a skipped stage would have written: refused before anything runs.
    path = base()
    text = _refused(path, only=["rl"])
    assert "prepare: " in text and "stage 'prepare' would write it but is not part of this run" in text
    (tmp_path / "run" / "prepared").mkdir(parents=True)
    (tmp_path / "run" / "prepared" / "meta.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"rl.traces: .*thoughts/sft.jsonl.gz does not exist; stage 'thoughts'"):
        run_pipeline(path, only=["rl"])
    (tmp_path / "run" / "thoughts").mkdir()
    (tmp_path / "run" / "thoughts" / "sft.jsonl.gz").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"rl.init: .*checkpoints/sft/final does not exist; stage 'sft'"):
        run_pipeline(path, only=["rl"])
    with pytest.raises(ConfigError, match=r"eval.models: .*checkpoints/sft/final does not exist"):
        run_pipeline(base(eval={"models": ["base", "sft"]}), only=["eval"])
    with pytest.raises(ConfigError, match=r"sft.model: .*no-model does not exist"):
        run_pipeline(base(sft={"model": str(tmp_path / "no-model")}), only=["sft"])
    # The same inputs are fine when the stages that write them are part of the run.
    assert [s.name for s in validate(load_yaml(base()), None, only=["thoughts", "sft", "rl"])] == [
        "thoughts",
        "sft",
        "rl",
    ]


def test_only_and_force_name_stages(base):
    path = base()
    with pytest.raises(ConfigError, match=r"--only: unknown name 'prep' \(did you mean 'prepare'\?\)"):
        run_pipeline(path, only=["prep"])
    with pytest.raises(ConfigError, match="--force: unknown name 'evl'"):
        run_pipeline(path, force=["evl"])


def test_the_cli_prints_one_line_and_runs_nothing(base, capsys, monkeypatch):
    monkeypatch.setenv("R2REC_LOG_LEVEL", "WARNING")
    path = base(sft={"learning_rate": -1})
    rc = main(["pipeline", "--config", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"r2rec pipeline: error: {path}: sft.learning_rate: must be > 0, got -1"]
    assert not (path.parent / "run" / "prepared").exists()
    rc = main(["pipeline", "--config", str(base()), "--only", "prepare,graf", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "did you mean 'graph'?" in err


def test_build_names_the_section_and_the_key():
    from r2rec.train.rl import RLConfig
    from r2rec.train.sft import SFTConfig

    with pytest.raises(ConfigError) as err:
        build(SFTConfig, {"learning_rate": -1}, where="sft", path="configs/x.yaml")
    assert str(err.value) == "configs/x.yaml: sft.learning_rate: must be > 0, got -1"
    for values, message in [
        ({"max_steps": True}, "sft.max_steps: expected int, got True"),
        ({"lora_target_modules": 3}, "sft.lora_target_modules: expected a list"),
        ({"model": ["a"]}, "sft.model: expected str"),
        ({"max_steps": 0}, "sft.max_steps: must be >= 1 (or -1"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            build(SFTConfig, values, where="sft")
    with pytest.raises(ConfigError, match=r"rl: unknown key\(s\) \['betta'\] \(did you mean 'beta'\?\)"):
        build(RLConfig, {}, ["betta=0.1"], where="rl")
    assert build(SFTConfig, {"max_steps": 3.0}).max_steps == 3  # a whole float is an int


@pytest.mark.parametrize("path", sorted(glob.glob(str(REPO / "configs" / "*.yaml"))), ids=lambda p: Path(p).name)
def test_every_shipped_config_passes(path, tmp_path):
    stages = validate(load_yaml(path), path, run_root=tmp_path / "run")
    assert stages and stages[0].name == "prepare"
