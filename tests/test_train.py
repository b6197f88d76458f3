"""The Trainer: config, schedule, freezing, DDP equivalence, exact resume after SIGKILL, faults."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tabvlm.cli import main as cli_main
from tabvlm.config import load
from tabvlm.errors import ConfigError
from tabvlm.model import TabVLM
from tabvlm.train import (
    SampleSource,
    TrainConfig,
    Trainer,
    TrainingError,
    checkpoints,
    load_state,
    lr_factor,
    param_groups,
)

ROOT = Path(__file__).parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SMALL_MODEL = {"lm": {"num_layers": 1}, "vision": {"num_layers": 1}}
# small English tables, few tokens: a vlm-sft step of the tiny model takes well under a second
SMALL_SYNTH = {
    "rows": [2, 3], "cols": [2, 2], "zh_rate": 0.0, "span_rate": 0.0, "long_text_rate": 0.0, "pool_size": 10,
}  # fmt: skip


def config(tmp_path: Path, **extra: object) -> TrainConfig:
    """A tiny vlm-sft run on the synthetic stream (no eval, no logs)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = {"image_size": 128, "max_len": 256, "synth": SMALL_SYNTH, "render": {"width": [200, 300]}}
    base = {
        "stage": "vlm-sft", "model_config": TINY, "model": SMALL_MODEL, "data": data, "train_vision": True,
        "batch_size": 2, "max_steps": 4, "lr": 1e-3, "warmup_steps": 1, "num_workers": 0,
        "out_dir": str(tmp_path / "run"), "save_every": 100, "log_every": 1, "progress": False,
        "tensorboard": False, "eval": {"final_samples": 0},
    }  # fmt: skip
    base.update(extra)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(base))  # JSON is YAML
    return load(TrainConfig, path)


def text_config(tmp_path: Path, **extra: object) -> TrainConfig:
    """A tiny lm-pretrain run on a plain-text jsonl file (fast: no images)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "text.jsonl"
    lines = [
        {"text": f"row {i}: <table><tr><td>{i * 7}</td><td>item {i}</td></tr></table>" * (1 + i % 3)}
        for i in range(40)
    ]
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return config(tmp_path, stage="lm-pretrain", data_files=[str(data)], train_vision=None, **extra)


def weights(model: TabVLM) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# --------------------------------------------------------------------------------- config


def test_unknown_key_is_an_error_that_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nonsense"):
        load(TrainConfig, ROOT / "configs" / "quickstart.yaml", ["data.synth.nonsense=1"])
    with pytest.raises(ConfigError, match="lrr"):
        load(TrainConfig, ROOT / "configs" / "quickstart.yaml", ["lrr=1"])
    assert cli_main(["train", str(ROOT / "configs" / "quickstart.yaml"), "optim.lr=1"]) == 1


def test_model_keys_are_checked_too(tmp_path: Path) -> None:
    cfg = config(tmp_path, model={"lm": {"num_layerz": 1}})
    with pytest.raises(ConfigError, match="num_layerz"):
        Trainer(cfg)


@pytest.mark.parametrize(
    "name", ["quickstart", "base-lm-pretrain", "base-lm-sft", "base-vlm-pretrain", "base-vlm-sft"]
)
def test_recipes_load(name: str) -> None:
    cfg = load(TrainConfig, ROOT / "configs" / f"{name}.yaml")
    assert cfg.stage in name or name == "quickstart"


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    f = [lr_factor(s, warmup=10, total=110, min_ratio=0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone decay after warmup
    assert f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1)


def test_no_weight_decay_on_norms_biases_embeddings(tmp_path: Path) -> None:
    model = Trainer(config(tmp_path)).model
    decay, rest = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert id(model.language_model.embed_tokens.weight) not in decayed
    assert id(model.vision_model.embeddings.position_embedding.weight) not in decayed
    assert all(p.ndim >= 2 for p in decay["params"])
    assert any("q_proj" in names[i] for i in decayed)
    assert {id(p) for p in rest["params"]} >= {id(p) for p in model.parameters() if p.ndim < 2}


def test_stage_freeze_defaults_and_overrides(tmp_path: Path) -> None:
    def trained(**kw: object) -> set[str]:
        model = Trainer(config(tmp_path, **kw)).model
        return {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}

    assert trained(stage="vlm-pretrain", train_vision=None) == {"connector"}
    assert trained(stage="vlm-sft", train_vision=None) == {"connector", "language_model"}
    assert trained(stage="vlm-sft", train_vision=True) == {"vision_model", "connector", "language_model"}
    assert trained(stage="vlm-pretrain", train_vision=None, train_lm=True) == {"connector", "language_model"}


def test_sample_source_mixes_exactly_and_visits_every_record_each_epoch() -> None:
    files = [[("f", i) for i in range(3)], [("f", i) for i in range(3, 5)]]
    src = SampleSource(0.25, lambda i: ("s", i), files, seed=0)
    out = [src(g) for g in range(20)]
    synth = [x for x in out if x[0] == "s"]
    assert [i for _, i in synth] == list(range(5))  # a quarter, numbered in order
    recs = [i for kind, i in out if kind == "f"]
    assert sorted(recs[:5]) == sorted(recs[5:10]) == list(range(5))
    assert recs[:5] != recs[5:10]  # a new shuffle each epoch


# --------------------------------------------------------------------------------- training


def test_loss_goes_down_and_checkpoint_holds_everything(tmp_path: Path) -> None:
    cfg = text_config(tmp_path, max_steps=12, save_every=6, keep_last=1, lr=3e-3, warmup_steps=2)
    trainer = Trainer(cfg)
    first = trainer.train_step([next(trainer._loader())])["loss"]
    result = trainer.fit()
    assert result.loss < first - 1.0
    ckpts = checkpoints(cfg.out_dir)
    assert [p.name for p in ckpts] == ["step-0000012"]  # keep_last=1 dropped step 6
    names = {p.name for p in ckpts[0].iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "train_config.yaml",
        "trainer_state.pt",
    } <= names
    state = load_state(ckpts[0])
    assert state["step"] == 12 and state["consumed"] == 2 * 12  # the step taken above counts as step 1
    loaded = TabVLM.from_pretrained(result.final_dir)
    assert max_diff(weights(loaded), weights(trainer.model)) == 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ddp(rank: int, world: int, port: int, cfg: TrainConfig, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    trainer = Trainer(cfg)
    trainer.fit()
    if rank == 0:
        torch.save(weights(trainer.model), out)
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """2 ranks x batch 2 == 1 rank x batch 4: rank r takes samples r, r+2, ..., and the loss is the
    token mean of the global batch. What differs is fp32 summation order (the all-reduce adds two
    partial gradients, one process adds them in one matmul): ~1e-7 relative per step, which Adam
    turns into update differences of the same relative size; 5e-6 after 3 steps at lr 1e-3 leaves
    room for that and fails on any real difference (a wrong sample or scale moves weights ~1e-3)."""
    steps = 3
    one = text_config(tmp_path / "one", max_steps=steps, batch_size=4, save_every=100)
    torch.set_num_threads(1)
    single = Trainer(one)
    single.fit()
    two = text_config(tmp_path / "two", max_steps=steps, batch_size=2, save_every=100)
    out = str(tmp_path / "ddp.pt")
    mp.start_processes(_run_ddp, args=(2, _free_port(), two, out), nprocs=2, start_method="spawn")
    ddp = torch.load(out, weights_only=True)
    assert max_diff(ddp, weights(single.model)) <= 5e-6
    assert max_diff(ddp, weights(Trainer(text_config(tmp_path / "init")).model)) > 1e-4  # it did train


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from tabvlm import train
    original = train.Trainer.save_checkpoint
    def save_then_hang(self):
        path = original(self)
        if self.step == int(sys.argv[1]):
            print("SAVED", flush=True)
            time.sleep(600)  # the test SIGKILLs us here, mid-run
        return path
    train.Trainer.save_checkpoint = save_then_hang
    from tabvlm.cli import main
    sys.exit(main(["train", *sys.argv[2:]]))
    """
)


def test_resume_after_sigkill_matches_a_straight_run(tmp_path: Path) -> None:
    n = 2
    straight = config(tmp_path / "a", max_steps=2 * n, save_every=n)
    torch.manual_seed(123)
    expected = Trainer(straight).fit()
    expected_w = load_file(str(expected.final_dir / "model.safetensors"))

    cfg_path = tmp_path / "b.json"
    killed = config(tmp_path / "b", max_steps=2 * n, save_every=n, num_workers=1)
    from tabvlm.config import save

    save(killed, cfg_path)
    script = tmp_path / "hang.py"
    script.write_text(RESUME_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(n), str(cfg_path), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.time() + 120
        line = ""
        while "SAVED" not in line and time.time() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line and proc.poll() is not None:
                break
        assert "SAVED" in line, "the training subprocess never wrote its step-N checkpoint"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in checkpoints(killed.out_dir)] == [f"step-{n:07d}"]

    resumed = Trainer(killed, resume=True)
    assert resumed.step == n
    result = resumed.fit()
    got = load_file(str(result.final_dir / "model.safetensors"))
    assert result.step == 2 * n
    assert max_diff(got, expected_w) <= 1e-6


# --------------------------------------------------------------------------------- faults


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = text_config(tmp_path, max_steps=6, save_every=2)
    trainer = Trainer(cfg)
    calls = {"n": 0}

    def poison(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 3 else output  # the 3rd step's forward

    trainer.model.language_model.norm.register_forward_hook(poison)
    with pytest.raises(TrainingError, match=r"step 3: loss nan.*step-0000002"):
        trainer.fit()
    assert [p.name for p in checkpoints(cfg.out_dir)] == ["step-0000002"]
    assert load_state(checkpoints(cfg.out_dir)[0])["step"] == 2
    assert trainer.step == 2  # the poisoned update never happened
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_failed_save_leaves_the_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = text_config(tmp_path, max_steps=4, save_every=2)
    trainer = Trainer(cfg)
    loader = trainer._loader()
    for _ in range(2):
        trainer.train_step([next(loader)])
    good = trainer.save_checkpoint()
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    def disk_full(state: dict, path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tabvlm.train.checkpoint.write_state", disk_full)
    for _ in range(2):
        trainer.train_step([next(loader)])
    with pytest.raises(TrainingError, match="No space left"):
        trainer.save_checkpoint()
    assert checkpoints(cfg.out_dir) == [good]
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert [p.name for p in (Path(cfg.out_dir) / "checkpoints").iterdir()] == [good.name]  # no temp left
    assert Trainer(cfg, resume=True).step == 2


def test_vlm_sft_evaluates_and_keeps_metrics_in_the_checkpoint(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_steps=2, save_every=1, eval={"every": 1, "samples": 2, "final_samples": 2,
                                                            "max_new_tokens": 24, "batch_size": 2})  # fmt: skip
    result = Trainer(cfg).fit()
    assert {"eval_ed", "eval_teds", "final_ed", "final_teds"} <= set(result.metrics)
    assert 0.0 <= result.metrics["final_ed"] <= 1.0
    saved = json.loads((checkpoints(cfg.out_dir)[-1] / "metrics.json").read_text())
    assert saved["step"] == 2 and "eval_ed" in saved


# --------------------------------------------------------------------------------- reading loss


class _Crash(Exception):
    pass


def test_reading_loss_head_trains_resumes_exactly_and_never_ships(tmp_path: Path, monkeypatch) -> None:
    n = 2
    straight_cfg = config(tmp_path / "a", max_steps=2 * n, save_every=n, reading_loss=1.0)
    straight = Trainer(straight_cfg)
    batch = next(straight._loader())
    assert batch["reading"] is not None and batch["reading"]["has"].tolist() == [1.0, 1.0]
    assert straight.train_step([batch])["reading_loss"] > 0
    straight = Trainer(straight_cfg)
    expected = straight.fit()
    head_expected = {k: v.clone() for k, v in straight.reading_head.state_dict().items()}
    assert straight.metrics["loss"] > 0

    cfg = config(tmp_path / "b", max_steps=2 * n, save_every=n, reading_loss=1.0)
    original = Trainer.save_checkpoint

    def save_then_crash(self: Trainer) -> Path:
        path = original(self)
        raise _Crash(path)

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(_Crash):
        Trainer(cfg).fit()
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    assert "reading_head" in load_state(checkpoints(cfg.out_dir)[-1])
    # a head of other character classes cannot resume exactly: a clear error, nothing loaded
    from tabvlm.train import reading

    monkeypatch.setattr(reading, "N_CHAR_CLASSES", reading.N_CHAR_CLASSES + 1)
    with pytest.raises(TrainingError, match="character classes changed.*init_from="):
        Trainer(cfg, resume=True)
    monkeypatch.setattr(reading, "N_CHAR_CLASSES", reading.N_CHAR_CLASSES - 1)
    resumed = Trainer(cfg, resume=True)
    result = resumed.fit()
    got = load_file(str(result.final_dir / "model.safetensors"))
    assert max_diff(got, load_file(str(expected.final_dir / "model.safetensors"))) <= 1e-6
    assert max_diff(resumed.reading_head.state_dict(), head_expected) <= 1e-6
    # the head changes training only: the model folder holds the same keys as without it
    plain = Trainer(config(tmp_path / "c", max_steps=1)).fit()
    assert got.keys() == load_file(str(plain.final_dir / "model.safetensors")).keys()


def test_vlm_reading_trains_the_vision_side_on_the_reading_loss_alone(tmp_path: Path) -> None:
    cfg = config(tmp_path, stage="vlm-reading", train_vision=None, reading_loss=1.0, max_steps=3)
    cfg.eval.final_samples = 3
    trainer = Trainer(cfg)
    assert {n.split(".")[0] for n, p in trainer.model.named_parameters() if p.requires_grad} == {
        "vision_model",
        "connector",
    }
    before = weights(trainer.model)
    batch = next(trainer._loader())
    calls = []
    hook = trainer.model.language_model.register_forward_hook(lambda *_: calls.append(1))
    stats = trainer.train_step([batch])
    hook.remove()
    assert calls == []  # the LM never runs
    assert stats["loss"] == 0.0 and stats["reading_loss"] > 0
    after = weights(trainer.model)
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"vision_model", "connector"}  # the LM and its tied embeddings stay as they were
    # it is judged without decoding: the share of image tokens in text that read as their cell's
    result = trainer.fit()
    assert 0.0 <= result.metrics["final_read"] <= 1.0 and "final_teds" not in result.metrics
    # what it learns is a model folder a vlm-sft run starts from
    final = result.final_dir
    Trainer(config(tmp_path / "sft", init_from=str(final), max_steps=1, reading_loss=1.0)).fit()


@pytest.mark.parametrize(
    ("extra", "message"),
    [({}, "reading_loss > 0"), ({"reading_loss": 1.0, "train_lm": True}, "train_lm")],
)
def test_vlm_reading_needs_the_reading_loss_and_a_frozen_lm(
    tmp_path: Path, extra: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, stage="vlm-reading", **extra)


def test_reading_loss_needs_synthetic_images(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reading_loss"):
        Trainer(text_config(tmp_path, reading_loss=1.0))


# --------------------------------------------------------------------------------- bad values


BAD_VALUES = [
    ("lr=-1", "lr"),
    ("lr=nan", "lr"),
    ("num_workers=-1", "num_workers"),
    ("betas=[0.9]", "betas"),
    ("betas=[0.9,1.0]", "betas"),
    ("betas=[-0.1,0.9]", "betas"),
    ("grad_clip=-1", "grad_clip"),
    ("weight_decay=-0.1", "weight_decay"),
    ("warmup_steps=-1", "warmup_steps"),
    ("min_lr_ratio=1.5", "min_lr_ratio"),
    ("min_lr_ratio=-0.1", "min_lr_ratio"),
    ("device=banana", "device"),
    ("device=cuda", "device"),  # torch.cuda.is_available() is patched to False below
]


@pytest.mark.parametrize(("override", "field"), BAD_VALUES)
def test_bad_training_values_are_one_line_errors_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, override: str, field: str
) -> None:
    cfg = text_config(tmp_path, max_steps=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli_main(["train", str(tmp_path / "cfg.json"), override, "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"tabvlm train: error: {field}:") and "expected" in err and "found" in err, err
    assert not Path(cfg.out_dir).exists()  # nothing half-written


@pytest.mark.parametrize("where", ["a file on the path", "a file"])
def test_unwritable_out_dir_is_noticed_before_the_first_step(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    text_config(tmp_path, max_steps=1)
    (tmp_path / "afile").write_text("not a folder")
    out_dir = tmp_path / "afile" / "run" if where == "a file on the path" else tmp_path / "afile"

    def no_training(*args: object) -> None:
        raise AssertionError("a training step ran before out_dir was checked")

    monkeypatch.setattr(Trainer, "train_step", no_training)
    assert cli_main(["train", str(tmp_path / "cfg.json"), f"out_dir={out_dir}", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tabvlm train: error: out_dir:") and str(out_dir) in err, err
    assert (tmp_path / "afile").read_text() == "not a folder"


# --------------------------------------------------------------------------------- damaged checkpoints


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step lm-pretrain run with checkpoints at steps 2 and 4 (tests damage copies)."""
    tmp = tmp_path_factory.mktemp("two")
    torch.set_num_threads(1)
    Trainer(text_config(tmp, max_steps=4, save_every=2, keep_last=2)).fit()
    return tmp


def damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # corrupt: same size, 16 bytes flipped in the middle
        data = bytearray(path.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "corrupt", "missing"])
@pytest.mark.parametrize("name", ["trainer_state.pt", "model.safetensors", "metrics.json"])
def test_resume_skips_a_damaged_newest_checkpoint_with_a_warning(
    two_checkpoints: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, how: str
) -> None:
    shutil.copytree(two_checkpoints, tmp_path, dirs_exist_ok=True)
    cfg = text_config(tmp_path, max_steps=4, save_every=2, keep_last=2)
    damage(Path(cfg.out_dir) / "checkpoints" / "step-0000004" / name, how)
    with caplog.at_level(logging.WARNING, logger="tabvlm"):
        trainer = Trainer(cfg, resume=True)
    assert trainer.step == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "step-0000004" in warnings[0] and name in warnings[0], warnings
    # the run continues exactly from step 2: the same final weights as the undamaged run
    result = trainer.fit()
    expected = load_file(str(two_checkpoints / "run" / "final" / "model.safetensors"))
    assert max_diff(load_file(str(result.final_dir / "model.safetensors")), expected) <= 1e-6
    # the resumed run's folders say its own step, not the one its checkpoint's metrics held
    assert json.loads((result.final_dir / "metrics.json").read_text())["step"] == 4


def test_resume_checks_checkpoints_written_before_manifests_by_loading_them(
    two_checkpoints: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(two_checkpoints, tmp_path, dirs_exist_ok=True)
    cfg = text_config(tmp_path, max_steps=4, save_every=2, keep_last=2)
    for path in checkpoints(cfg.out_dir):
        (path / "manifest.json").unlink(missing_ok=True)  # as the trainer wrote them before manifests
    assert Trainer(cfg, resume=True).step == 4
    damage(Path(cfg.out_dir) / "checkpoints" / "step-0000004" / "trainer_state.pt", "truncated")
    with caplog.at_level(logging.WARNING, logger="tabvlm"):
        assert Trainer(cfg, resume=True).step == 2
    assert any("step-0000004: trainer_state.pt does not load" in r.getMessage() for r in caplog.records)


def test_resume_with_every_checkpoint_damaged_is_a_one_line_error(
    two_checkpoints: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    shutil.copytree(two_checkpoints, tmp_path, dirs_exist_ok=True)
    cfg = text_config(tmp_path, max_steps=4, save_every=2, keep_last=2)
    damage(Path(cfg.out_dir) / "checkpoints" / "step-0000004" / "trainer_state.pt", "truncated")
    damage(Path(cfg.out_dir) / "checkpoints" / "step-0000002" / "model.safetensors", "missing")
    assert cli_main(["train", str(tmp_path / "cfg.json"), "--resume", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tabvlm train: error: --resume: no intact checkpoint"), err
    assert "step-0000004" in err[0] and "step-0000002" in err[0]


# --------------------------------------------------------------------------------- kills during a save

# What the save does to the disk, as audit events (sys.addaudithook): the kill points. Writes done
# inside torch / safetensors / tokenizers (C++, Rust) raise no event; a kill during one leaves the
# same state as a kill at the next event (a temporary folder without its manifest).
WRITE_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def save_killed_at(k: int, save: Callable[[], object]) -> bool:
    """Run `save` in a forked child that SIGKILLs itself at its k-th write to the disk; whether it
    was killed (False: the save has fewer than k writes and finished)."""
    pid = os.fork()
    if pid == 0:  # the child: no return, no pytest teardown
        code = 0
        try:
            count = 0

            def hook(event: str, args: tuple) -> None:
                nonlocal count
                if event in WRITE_EVENTS or (
                    event == "open" and isinstance(args[2], int) and args[2] & WRITE_FLAGS
                ):
                    count += 1
                    if count == k:
                        os.kill(os.getpid(), signal.SIGKILL)

            sys.addaudithook(hook)
            save()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) == 0, "the save raised in the child (see its traceback above)"
        return False
    assert os.WTERMSIG(status) == signal.SIGKILL
    return True


def no_leftovers(out_dir: Path) -> list[str]:
    names = [p.name for p in out_dir.iterdir()] + [p.name for p in (out_dir / "checkpoints").iterdir()]
    return [n for n in names if n.startswith(".") or n.endswith(".old")]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")
@pytest.mark.parametrize("what", ["new step", "same step", "final"])
def test_a_kill_at_any_point_of_a_save_leaves_the_old_or_the_new_checkpoint(
    tmp_path: Path, what: str
) -> None:
    """Kill the save at its 1st, 2nd, ... write to the disk; the next start (resume, or load of
    final/) finds the old checkpoint or the new one, whole, and no leftovers."""
    cfg = text_config(tmp_path, max_steps=8, save_every=100, keep_last=1)
    out = Path(cfg.out_dir)
    trainer = Trainer(cfg)
    loader = trainer._loader()
    for _ in range(2):
        trainer.train_step([next(loader)])
    old_step, old_w = trainer.step, weights(trainer.model)
    trainer.save_checkpoint()
    if what == "final":
        trainer.save_final()
    if what == "new step":
        for _ in range(2):
            trainer.train_step([next(loader)])
    else:
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.add_(1.0)
    new_step, new_w = trainer.step, weights(trainer.model)
    save = trainer.save_final if what == "final" else trainer.save_checkpoint
    pristine = tmp_path / "pristine"
    shutil.copytree(out, pristine)
    found = []  # "old" or "new", a kill point each
    for k in range(1, 200):
        shutil.rmtree(out)
        shutil.copytree(pristine, out)
        if not save_killed_at(k, save):
            break
        if what == "final":
            Trainer(cfg)  # a start: leftovers are recovered
            step = json.loads((out / "final" / "metrics.json").read_text())["step"]
            got = weights(TabVLM.from_pretrained(out / "final"))
        else:
            resumed = Trainer(cfg, resume=True)
            step, got = resumed.step, weights(resumed.model)
            for path in checkpoints(out):  # every checkpoint left is whole
                TabVLM.from_pretrained(path)
                load_state(path)
        if step == old_step and max_diff(got, old_w) == 0.0:
            found.append("old")
        elif step == new_step and max_diff(got, new_w) == 0.0:
            found.append("new")
        else:
            raise AssertionError(f"killed at write {k}: neither the old checkpoint nor the new one")
        assert no_leftovers(out) == [], f"killed at write {k}"
    assert len(found) >= 5 and set(found) == {"old", "new"}, found  # both outcomes occur


def test_token_read_rate_counts_image_tokens_whose_nearest_token_is_their_cells() -> None:
    from tabvlm.train.reading import token_read_rate

    embeddings = torch.eye(4)  # token t's embedding is the unit vector e_t
    features = torch.tensor([[[0.0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]])
    # image tokens 0-2 lie in cells (tokens 0 and 1 in the same cell of ids {1, 2}); 3 is in none
    tokens = torch.tensor([[[1, 2], [1, 2], [3, -100], [-100, -100]]])
    assert token_read_rate(features, tokens, embeddings) == (2, 3)


def test_progress_in_a_log_file_is_a_plain_line_a_step(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Trainer(text_config(tmp_path, max_steps=4, progress=True)).fit()  # stderr: not a terminal here
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("lm-pretrain: ")]
    assert [line.split(" step")[0] for line in lines] == [f"lm-pretrain: {n}/4" for n in range(1, 5)]
    assert all(re.search(r" \| loss=\d+\.\d{4}$", line) for line in lines)  # each step's own loss
    assert lines[-1].startswith("lm-pretrain: 4/4 step (100%) | ")
