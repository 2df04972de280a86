"""Tests of the train / evaluate / compare commands and the retraining experiment files."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

import autoloss.retrain.runs as runs_mod
from autoloss.cli.app import main
from autoloss.cli.train import register
from autoloss.core.metrics import METRIC_NAMES
from autoloss.data import load_dataset
from autoloss.losses import loss_names
from autoloss.retrain.experiment import DEFAULT_TRAIN, experiment_from_dict, read_experiment
from autoloss.train.checkpoint import load_checkpoint
from autoloss.train.trainer import evaluate as trainer_evaluate

REPO = Path(__file__).resolve().parents[1]
DATA = "shapes?n=16&size=32"
TINY = ["--data", DATA, "--width", "4", "--depth", "2", "--steps", "4", "--batch-size", "2",
        "--eval-every", "2", "--num-threads", "1", "--no-progress"]


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread


def cli(*argv: str) -> int:
    """Run a subcommand as ``autoloss`` would (errors propagate instead of exit code 2)."""
    parser = argparse.ArgumentParser(prog="autoloss")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    assert cli("train", "--loss", "asl-voc-miou", *TINY, "--out", out) == 0
    return out


def test_train_writes_its_files(trained):
    assert {p.name for p in trained.iterdir()} >= {"checkpoint.pt", "metrics.json", "log.jsonl",
                                                   "run.json"}
    assert [p.name for p in trained.parent.iterdir()] == ["run"]  # its lock file inside it
    stored = json.loads((trained / "metrics.json").read_text())
    assert set(stored["test"]) == set(METRIC_NAMES)
    assert list(stored["test_per_class_iou"]) == load_dataset(DATA, "test").class_names
    assert stored["loss"] == "asl-voc-miou" and stored["data"] == DATA
    assert stored["loss_spec"]["metric"] == "miou"
    assert stored["loss_spec"]["ignore_index"] == 255  # from the dataset
    assert stored["train_config"]["steps"] == 4 and stored["model"]["width"] == 4
    assert stored["train_time"] > 0
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "eval" in r] == [2, 4]  # validation every 2 steps
    # the stored test metrics are those of the checkpoint (trainer's own evaluation code)
    model, meta = load_checkpoint(trained / "checkpoint.pt")
    ref = trainer_evaluate(model, load_dataset(DATA, "test"))
    for name, value in ref.items():
        assert stored["test"][name] == (None if math.isnan(value) else pytest.approx(value))


def test_train_again_does_not_retrain(trained, monkeypatch, capsys):
    def no_fit(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runs_mod, "fit", no_fit)
    mtime = (trained / "checkpoint.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert cli("train", "--loss", "asl-voc-miou", *TINY, "--out", trained) == 0
    out = capsys.readouterr().out
    assert "finished earlier, not retrained" in out
    stored = json.loads((trained / "metrics.json").read_text())
    assert f"miou        {100 * stored['test']['miou']:6.2f}" in out
    assert (trained / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_interrupted_train_resumes(tmp_path, monkeypatch, capsys):
    real, starts = runs_mod.fit, []

    def interrupt(*args, **kwargs):
        def stop(step, metrics):
            raise KeyboardInterrupt
        return real(*args, **kwargs, on_eval=stop)

    def record(*args, **kwargs):
        result = real(*args, **kwargs)
        starts.append(result.start_step)
        return result

    monkeypatch.setattr(runs_mod, "fit", interrupt)
    assert main(["train", "--loss", "soft-miou", *TINY, "--out", str(tmp_path / "r")]) == 130
    assert not (tmp_path / "r" / "metrics.json").exists()
    assert capsys.readouterr().err == (f"autoloss train: interrupted; run the same command to "
                                       f"resume (from {tmp_path / 'r' / 'checkpoint.pt'})\n")
    monkeypatch.setattr(runs_mod, "fit", record)
    cli("train", "--loss", "soft-miou", *TINY, "--out", tmp_path / "r")
    assert starts == [2] and (tmp_path / "r" / "metrics.json").is_file()


def test_evaluate_prints_metrics_and_per_class_iou(trained, capsys):
    capsys.readouterr()
    assert cli("evaluate", "--checkpoint", trained / "checkpoint.pt", "--data", DATA) == 0
    text = capsys.readouterr().out
    stored = json.loads((trained / "metrics.json").read_text())
    for name in METRIC_NAMES:
        value = stored["test"][name]
        assert f"{name:<10}  {'n/a' if value is None else f'{100 * value:6.2f}'}" in text
    for name in load_dataset(DATA, "test").class_names:
        assert f"\n{name:<10}  " in text
    assert cli("evaluate", "--checkpoint", trained / "checkpoint.pt",  # data from run.json
               "--split", "val", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["split"] == "val" and data["images"] == 4 and data["data"] == DATA
    assert data["metrics"] == pytest.approx(stored["val"])  # the last validation of training
    assert set(data["per_class_iou"]) == set(stored["test_per_class_iou"])


def test_compare_done_when_command_tiny(tmp_path, capsys):
    losses = ["cross_entropy", "lovasz_softmax", "asl-voc-miou"]
    assert cli("compare", "--losses", ",".join(losses), "--seeds", "2", *TINY, "--no-plots",
               "--out", tmp_path / "cmp") == 0
    out = capsys.readouterr().out
    assert "[6/6] " + losses[2] + " seed 1 ..." in out
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "Produced by `autoloss compare --data " in md and " --losses cross_entropy," in md
    assert " --no-plots`" in md and not (tmp_path / "cmp" / "plots").exists()
    scores = md.split("## Test scores")[1].split("##")[0]
    rows = [line for line in scores.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 3 and all(f"| {loss} |" in md for loss in losses)
    assert all(row.endswith("| 2 |") for row in rows[1:])  # 2 runs each
    assert "## Paired difference to cross_entropy" in md and "## Test IoU per class" in md
    assert len(list((tmp_path / "cmp" / "runs").glob("*/seed*/metrics.json"))) == 6


def test_compare_tensorboard_writes_one_run_per_loss_and_seed(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra; not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = tmp_path / "tb"
    assert cli("compare", "--losses", "cross_entropy,soft-miou", "--seeds", "1", *TINY,
               "--no-plots", "--out", tmp_path / "cmp", "--tensorboard", board) == 0
    assert sorted(p.relative_to(board).as_posix() for p in board.glob("*/seed*")) == [
        "cross_entropy/seed0", "soft-miou/seed0"]
    for run in ("cross_entropy", "soft-miou"):
        events = EventAccumulator(str(board / run / "seed0")).Reload()
        log = [json.loads(line) for line in
               (tmp_path / "cmp" / "runs" / run / "seed0" / "log.jsonl").read_text().splitlines()]
        evals = [r for r in log if "eval" in r]
        miou = events.Scalars("val/miou")
        assert [e.step for e in miou] == [r["step"] for r in evals]
        assert [e.value for e in miou] == pytest.approx([r["eval"]["miou"] for r in evals])


def test_compare_config_file_and_flag_override(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(f"losses: [soft-miou, soft-mdice]\ndata: '{DATA}'\nseeds: 3\nmodel: unet\n"
                      f"width: 4\ndepth: 2\nsteps: 2\nbatch_size: 2\neval_every: 2\n"
                      f"num_threads: 1\nplots: false\nout: {tmp_path / 'from-yaml'}\n")
    assert cli("compare", "--config", config, "--seeds", "1", "--no-progress") == 0
    summary = json.loads((tmp_path / "from-yaml" / "compare.json").read_text())
    assert summary["seeds"] == 1 and summary["losses"] == ["soft-miou", "soft-mdice"]
    assert summary["train_config"]["steps"] == 2 and summary["width"] == 4
    assert not (tmp_path / "from-yaml" / "plots").exists()
    # train --config trains the run compare would have trained: same folder, nothing to do
    capsys.readouterr()
    assert cli("train", "--config", config, "--loss", "soft-mdice", "--no-progress") == 0
    assert "finished earlier" in capsys.readouterr().out


def test_compare_report_folder_reuses_the_runs_of_another_panel(tmp_path, capsys):
    """``report:`` writes the tables of a sub-panel elsewhere; its runs are the panel's own."""
    config = tmp_path / "exp.yaml"
    config.write_text(f"losses: [cross_entropy, soft-miou]\ndata: '{DATA}'\nseeds: 1\n"
                      f"width: 4\ndepth: 2\nsteps: 2\nbatch_size: 2\neval_every: 2\n"
                      f"num_threads: 1\nplots: false\nout: {tmp_path / 'panel'}\n")
    assert cli("compare", "--config", config, "--no-progress") == 0
    panel_md = (tmp_path / "panel" / "compare.md").read_text()
    sub = tmp_path / "sub.yaml"
    sub.write_text(config.read_text().replace("seeds: 1", "seeds: 2")
                   + f"report: {tmp_path / 'sub'}\n")
    capsys.readouterr()
    assert cli("compare", "--config", sub, "--no-progress") == 0
    assert (tmp_path / "panel" / "compare.md").read_text() == panel_md  # left alone
    summary = json.loads((tmp_path / "sub" / "compare.json").read_text())
    assert summary["seeds"] == 2
    assert len(list((tmp_path / "panel" / "runs").glob("*/seed*/metrics.json"))) == 4
    assert not (tmp_path / "sub" / "runs").exists()


@pytest.mark.parametrize("name", ["retrain_shapes.yaml", "retrain_camvid.yaml"])
def test_experiment_files_load(name):
    values = read_experiment(REPO / "experiments" / name)
    exp = experiment_from_dict(values)
    assert len(exp.losses) >= 3 and exp.seeds >= 2
    assert exp.data.split(":")[0].split("?")[0] == name[len("retrain_"):-len(".yaml")]
    exp.train_config(seed=0)  # a valid TrainConfig
    known = set(loss_names()["presets"]) | set(loss_names()["baselines"])
    assert all(loss in known or Path(loss).suffix == ".yaml" for loss in exp.losses)


def test_experiment_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("losses: [soft-miou]\nstpes: 10\n")
    with pytest.raises(ValueError, match=r"unknown option 'stpes'.*did you mean 'steps'"):
        read_experiment(bad)
    with pytest.raises(ValueError, match="'seed' is set per run"):
        experiment_from_dict({"seed": 1})
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        experiment_from_dict({"seeds": 0})
    with pytest.raises(ValueError, match="width must be int or NoneType, but got '8'"):
        experiment_from_dict({"width": "8"})
    with pytest.raises(ValueError, match="plots must be bool, but got 'no'"):
        experiment_from_dict({"plots": "no"})
    with pytest.raises(ValueError, match="optimizer must be one of"):  # TrainConfig's check
        experiment_from_dict({"optimizer": "adam"})
    with pytest.raises(FileNotFoundError):
        read_experiment(tmp_path / "missing.yaml")


def test_experiment_values():
    exp = experiment_from_dict({"losses": "a, b", "crop": "96x128", "lr": 0.1})
    assert exp.losses == ("a", "b")
    config = exp.train_config(seed=3)
    assert config.crop == (96, 128) and config.lr == 0.1 and config.seed == 3
    assert config.steps == DEFAULT_TRAIN.steps
    assert experiment_from_dict({"crop": 64}).train_config(seed=0).crop == (64, 64)
    assert experiment_from_dict({"crop": [32, 48]}).train_config(seed=0).crop == (32, 48)
    assert experiment_from_dict({}).out_dir() == Path("results/retrain-shapes")
    assert experiment_from_dict({}).plots and not experiment_from_dict({"plots": False}).plots
    camvid = experiment_from_dict({"data": "camvid:/d/camvid?size=90x120"})
    assert camvid.out_dir() == Path("results/retrain-camvid-size-90x120")


def test_train_needs_a_loss():
    with pytest.raises(ValueError, match="train needs --loss"):
        cli("train", *TINY)


def test_train_with_test_split_null_reads_no_test_split(tmp_path, capsys):
    """``test_split: null``: a run on data without a test split (a search's held-out folder)
    validates and stores no test score; a comparison refuses it (it reports test scores)."""
    import json

    from autoloss.cli.app import main

    config = tmp_path / "exp.yaml"
    config.write_text("data: shapes?n=16&size=32\nwidth: 4\ndepth: 2\nsteps: 4\nbatch_size: 2\n"
                      "eval_every: 2\ntest_split: null\n")
    assert main(["train", "--config", str(config), "--loss", "cross_entropy", "--out",
                 str(tmp_path / "run"), "--no-progress", "--num-threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "val (last validation; test_split: null scores no test split)" in out
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["test"] is None and record["split"] is None and record["val"]["miou"] >= 0
    assert main(["compare", "--config", str(config), "--losses", "cross_entropy", "--out",
                 str(tmp_path / "cmp"), "--no-progress"]) == 2
    assert "test_split=None" in capsys.readouterr().err
