"""Tests of autoloss.train.trainer: determinism, exact resume, callbacks, logs, checkpoints, evaluate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autoloss.core.metrics import METRIC_NAMES
from autoloss.data import load_dataset
from autoloss.train.checkpoint import load_checkpoint, read_checkpoint, warm_start
from autoloss.train.models import UNetConfig, build_model, model_from_name, predict
from autoloss.train.trainer import NonFiniteLossError, TrainConfig, evaluate, fit

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread


QUICK = {"steps": 6, "batch_size": 2, "crop": (32, 32), "eval_every": 3, "log_every": 1}


@pytest.fixture(scope="module")
def train_data():
    return load_dataset("shapes", "train", subset=8, subset_seed=0)


@pytest.fixture(scope="module")
def val_data():
    return load_dataset("shapes", "val", subset=4, subset_seed=0)


def tiny(seed: int = 0, arch: str = "unet", num_classes: int = 6) -> nn.Module:
    return model_from_name(arch, in_channels=3, num_classes=num_classes, width=4, depth=2,
                           seed=seed)


def ce() -> nn.Module:
    return nn.CrossEntropyLoss(ignore_index=255)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Prune(Exception):
    pass


class SpecLoss(nn.Module):
    """Cross-entropy that describes itself, as searched losses do."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target, ignore_index=255)

    def to_dict(self) -> dict:
        return {"name": "cross_entropy", "ignore_index": np.int64(255)}


class NaNAfter(nn.Module):
    """Cross-entropy that turns NaN from call number ``after + 1`` on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        value = nn.functional.cross_entropy(logits, target, ignore_index=255)
        return value * math.nan if self.calls > self.after else value


def test_same_seed_same_weights_other_seed_differs(train_data, val_data) -> None:
    models = [tiny(), tiny(), tiny()]
    seeds = [0, 0, 1]
    for model, seed in zip(models, seeds):
        fit(model, ce(), train_data, config=TrainConfig(**QUICK, seed=seed), progress=False)
    assert same_weights(models[0], models[1])
    assert not same_weights(models[0], models[2])
    assert not same_weights(models[0], tiny())  # training changed the weights


def test_resume_after_interrupt_equals_uninterrupted_run(train_data, val_data,
                                                          tmp_path: Path) -> None:
    config = TrainConfig(**QUICK, seed=3)
    full = tiny()
    full_result = fit(full, ce(), train_data, config=config, eval_data=val_data,
                      metrics=["miou"], checkpoint_path=tmp_path / "full.pt",
                      log_path=tmp_path / "full.jsonl", progress=False)

    def stop_at_3(step: int, metrics: dict[str, float]) -> None:
        if step == 3:
            raise Prune

    ckpt, log = tmp_path / "run" / "ckpt.pt", tmp_path / "run" / "log.jsonl"
    with pytest.raises(Prune):
        fit(tiny(), ce(), train_data, config=config, eval_data=val_data, metrics=["miou"],
            on_eval=stop_at_3, checkpoint_path=ckpt, log_path=log, progress=False)
    assert read_checkpoint(ckpt)["step"] == 3
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt.pt", "log.jsonl"]  # no tmp
    assert max(r["step"] for r in read_log(log)) == 3

    resumed = tiny(seed=99)  # its own initial weights are replaced by the checkpoint's
    result = fit(resumed, ce(), train_data, config=config, eval_data=val_data, metrics=["miou"],
                 checkpoint_path=ckpt, log_path=log, progress=False)
    assert result.start_step == 3 and result.steps == 6
    assert same_weights(resumed, full)
    assert read_checkpoint(ckpt)["optimizer"] is None  # finished: no optimizer state kept
    assert read_checkpoint(tmp_path / "full.pt")["optimizer"] is None
    assert [h["step"] for h in result.history] == [3, 6]
    assert result.metrics == full_result.metrics
    def untimed(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "time"} for r in read_log(path)]

    assert untimed(log) == untimed(tmp_path / "full.jsonl")  # same losses, each step logged once

    # a finished checkpoint: nothing left to do, same weights
    again = tiny(seed=5)
    done = fit(again, ce(), train_data, config=config, eval_data=val_data, metrics=["miou"],
               checkpoint_path=ckpt, progress=False)
    assert done.start_step == 6 and same_weights(again, full)

    with pytest.raises(ValueError, match="lr"):
        fit(tiny(), ce(), train_data, config=TrainConfig(**QUICK, seed=3, lr=0.5),
            checkpoint_path=ckpt, progress=False)


def test_non_finite_loss_raises_with_step(train_data, tmp_path: Path) -> None:
    for after in (0, 2):
        ckpt = tmp_path / f"nan{after}.pt"
        with pytest.raises(NonFiniteLossError, match=f"step {after + 1}") as info:
            fit(tiny(), NaNAfter(after), train_data, config=TrainConfig(**QUICK),
                checkpoint_path=ckpt, progress=False)
        assert info.value.step == after + 1 and math.isnan(info.value.value)
        assert not ckpt.exists()


def test_on_eval_steps_and_metric_dicts(train_data, val_data) -> None:
    calls: list[tuple[int, dict]] = []
    config = TrainConfig(**{**QUICK, "steps": 7})
    result = fit(tiny(), ce(), train_data, config=config, eval_data=val_data,
                 on_eval=lambda step, m: calls.append((step, m)), progress=False)
    assert [step for step, _ in calls] == [3, 6, 7]
    for _, metrics in calls:
        assert set(metrics) == set(METRIC_NAMES)
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert result.metrics == calls[-1][1]
    assert [h["step"] for h in result.history] == [3, 6, 7]
    assert result.seconds_per_step > 0 and result.wall_time > 0

    subset: list[dict] = []
    fit(tiny(), ce(), train_data, config=config, eval_data=val_data, metrics=["miou", "bf1"],
        on_eval=lambda step, m: subset.append(m), progress=False)
    assert all(set(m) == {"miou", "bf1"} for m in subset)


def test_jsonl_log(train_data, val_data, tmp_path: Path) -> None:
    config = TrainConfig(**{**QUICK, "log_every": 2}, lr=0.02, poly_power=0.9)
    fit(tiny(), ce(), train_data, config=config, eval_data=val_data, metrics=["miou", "gacc"],
        log_path=tmp_path / "log.jsonl", progress=False)
    records = read_log(tmp_path / "log.jsonl")
    losses = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    assert [r["step"] for r in losses] == [2, 4, 6]
    assert [r["step"] for r in evals] == [3, 6]
    for r in losses:
        assert set(r) == {"step", "loss", "lr", "time"} and r["loss"] > 0
        assert r["lr"] == pytest.approx(0.02 * (1 - (r["step"] - 1) / 6) ** 0.9)
    assert all(set(r["eval"]) == {"miou", "gacc"} for r in evals)
    times = [r["time"] for r in losses]
    assert times == sorted(times)


def test_tensorboard_log_holds_what_the_jsonl_log_holds(train_data, val_data,
                                                        tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra; not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TrainConfig(**{**QUICK, "log_every": 2}, lr=0.02)
    fit(tiny(), ce(), train_data, config=config, eval_data=val_data, metrics=["miou", "gacc"],
        log_path=tmp_path / "log.jsonl", tensorboard_dir=tmp_path / "tb", progress=False)
    board = EventAccumulator(str(tmp_path / "tb"))
    board.Reload()
    assert set(board.Tags()["scalars"]) == {"train/loss", "train/lr", "val/miou", "val/gacc"}
    records = read_log(tmp_path / "log.jsonl")
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    logged = [(e.step, e.value) for e in board.Scalars("train/loss")]
    assert [s for s, _ in logged] == [s for s, _ in losses]
    assert [v for _, v in logged] == pytest.approx([v for _, v in losses], rel=1e-6)
    evals = [(r["step"], r["eval"]["miou"]) for r in records if "eval" in r]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in board.Scalars("val/miou")] == evals


def test_checkpoint_rebuilds_model_and_warm_start(train_data, val_data, tmp_path: Path) -> None:
    ckpt = tmp_path / "ce.pt"
    trained = tiny()
    fit(trained, SpecLoss(), train_data, config=TrainConfig(**QUICK), checkpoint_path=ckpt,
        progress=False)
    model, meta = load_checkpoint(ckpt)
    assert same_weights(model, trained) and not model.training
    assert meta["step"] == 6 and meta["train_config"]["crop"] == [32, 32]
    assert meta["loss"] == {"name": "cross_entropy", "ignore_index": 255}
    assert meta["model_config"]["arch"] == "unet"

    # warm start into a model with another number of classes: all but the head is copied
    other = tiny(seed=4, num_classes=3)
    with pytest.warns(UserWarning, match="kept their initial values"):
        skipped = warm_start(other, ckpt)
    assert skipped == ["head.bias", "head.weight"]
    own, src = other.state_dict(), trained.state_dict()
    assert all(torch.equal(own[k], src[k]) for k in own if k not in skipped)
    with pytest.raises(ValueError, match="at least half"):
        warm_start(model_from_name("deeplab", in_channels=3, num_classes=6, width=4, depth=2),
                   ckpt)

    # fit(init_from=...) equals warm-starting by hand, and differs from a cold start
    config = TrainConfig(**{**QUICK, "steps": 2}, seed=1)
    by_hand = tiny(seed=4)
    warm_start(by_hand, ckpt)
    fit(by_hand, ce(), train_data, config=config, progress=False)
    via_fit = tiny(seed=4)
    fit(via_fit, ce(), train_data, config=config, init_from=ckpt, progress=False)
    cold = tiny(seed=4)
    fit(cold, ce(), train_data, config=config, progress=False)
    assert same_weights(by_hand, via_fit) and not same_weights(via_fit, cold)

    plain = tmp_path / "plain.pt"  # a bare state_dict also works for warm starts
    torch.save(trained.state_dict(), plain)
    fresh = tiny(seed=8)
    assert warm_start(fresh, plain) == [] and same_weights(fresh, trained)
    with pytest.raises(ValueError, match="model config"):
        load_checkpoint(plain)


def test_evaluate_matches_an_independent_count(train_data, val_data) -> None:
    model = tiny()
    fit(model, ce(), train_data, config=TrainConfig(**QUICK), progress=False)
    scores = evaluate(model, val_data)
    assert set(scores) == set(METRIC_NAMES)
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert model.training  # mode restored

    images, labels = val_data.arrays()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    pred = predict(model, x, mean=val_data.mean, std=val_data.std).numpy()
    valid = labels != val_data.ignore_index
    ious = []
    for c in range(val_data.num_classes):
        p, g = (pred == c) & valid, (labels == c) & valid
        union = (p | g).sum()
        if union:
            ious.append((p & g).sum() / union)
    assert scores["miou"] == pytest.approx(np.mean(ious), abs=1e-9)
    assert scores["gacc"] == pytest.approx((pred == labels)[valid].mean(), abs=1e-9)
    assert evaluate(model, val_data, batch_size=3) == pytest.approx(scores, abs=1e-12)
    first = evaluate(model, val_data, metrics=["gacc"], max_images=1)
    assert first["gacc"] == pytest.approx((pred[0] == labels[0])[valid[0]].mean(), abs=1e-9)


def test_other_options_train(train_data, val_data) -> None:
    deeplab = tiny(arch="deeplab")
    before = {k: v.clone() for k, v in deeplab.state_dict().items()}
    config = TrainConfig(**QUICK, optimizer="adamw", lr=1e-3, grad_clip=1.0, augment=False,
                         num_threads=1)
    result = fit(deeplab, ce(), train_data, config=config, eval_data=val_data,
                 metrics=["miou"], progress=False)
    assert not all(torch.equal(before[k], v) for k, v in deeplab.state_dict().items())
    assert 0.0 <= result.metrics["miou"] <= 1.0
    # no crop, no augmentation: whole 64x64 images
    fit(build_model(UNetConfig(num_classes=6, width=4, depth=1)), ce(), train_data,
        config=TrainConfig(steps=1, batch_size=2, augment=False), progress=False)
    with pytest.raises(ValueError, match=r"\[N,3,H,W\]|outputs|logits"):
        fit(tiny(num_classes=4), ce(), train_data, config=TrainConfig(**QUICK), progress=False)


@pytest.mark.parametrize("bad, word", [
    ({"steps": 0}, "steps"), ({"optimizer": "sdg"}, "did you mean 'sgd'"),
    ({"crop": (32,)}, "crop"), ({"lr": -1.0}, "lr"), ({"momentum": 1.0}, "momentum"),
    ({"grad_clip": 0.0}, "grad_clip"), ({"scale": (1.5, 1.0)}, "scale"),
    ({"batch_size": 2.0}, "batch_size"),
])
def test_train_config_validation(bad: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        TrainConfig(**bad)


def test_poly_schedule() -> None:
    config = TrainConfig(steps=10, lr=0.1, poly_power=2.0)
    assert config.lr_at(0) == pytest.approx(0.1)
    assert config.lr_at(5) == pytest.approx(0.1 * 0.25)
    assert config.lr_at(9) == pytest.approx(0.1 * 0.01)
    assert TrainConfig(crop=[16, 24]).crop == (16, 24)  # lists (from YAML) become tuples


def test_tensorboard_without_the_package_names_it(monkeypatch, tmp_path: Path) -> None:
    import sys

    from autoloss.errors import MissingDependencyError
    from autoloss.train.tensorboard_log import TensorBoardLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(MissingDependencyError, match="pip install tensorboard"):
        TensorBoardLog(tmp_path / "tb")


def test_an_unfinished_checkpoint_without_optimizer_state_is_refused(train_data,
                                                                     tmp_path: Path) -> None:
    config = TrainConfig(**QUICK, seed=1)
    ckpt = tmp_path / "ckpt.pt"

    def stop_at_3(step: int, metrics: dict[str, float]) -> None:
        if step == 3:
            raise Prune

    with pytest.raises(Prune):
        fit(tiny(), ce(), train_data, config=config, eval_data=train_data, metrics=["miou"],
            on_eval=stop_at_3, checkpoint_path=ckpt, progress=False)
    data = read_checkpoint(ckpt)
    assert data["optimizer"] is not None  # mid-run: kept, the run can go on exactly
    torch.save({**data, "optimizer": None}, ckpt)
    with pytest.raises(ValueError, match="no optimizer state.*step 6"):
        fit(tiny(), ce(), train_data, config=config, checkpoint_path=ckpt, progress=False)
