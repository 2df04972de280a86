"""Tests of autoloss.retrain.compare: runs, resume after an interruption, the table, ignore index."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import statistics
import time
from pathlib import Path

import pytest

import autoloss.retrain.compare as compare_mod
import autoloss.retrain.runs as runs_mod
from autoloss.core.metrics import METRIC_NAMES
from autoloss.data import load_dataset
from autoloss.retrain.compare import (
    RunResult,
    build_loss,
    compare_losses,
    format_table,
    loss_slug,
    train_run,
)
from autoloss.retrain.experiment import Experiment
from autoloss.train.checkpoint import load_checkpoint
from autoloss.train.trainer import TrainConfig
from autoloss.train.trainer import evaluate as trainer_evaluate

DATA = "shapes?n=16&size=32"  # train 16, val 4, test 8 images of 32x32
TINY = {"width": 4, "depth": 2}
CONFIG = TrainConfig(steps=4, batch_size=2, eval_every=2, log_every=1, num_threads=1)


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread


class CountingFit:
    """Wraps ``autoloss.retrain.runs.fit``: counts calls, records start steps, and can raise
    KeyboardInterrupt at an evaluation of a chosen call (after its checkpoint is written)."""

    def __init__(self, interrupt_call: int | None = None, interrupt_step: int = 2) -> None:
        self.real = runs_mod.fit
        self.calls = 0
        self.start_steps: list[int] = []
        self.interrupt_call, self.interrupt_step = interrupt_call, interrupt_step

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.interrupt_call:
            def stop(step, metrics):
                if step == self.interrupt_step:
                    raise KeyboardInterrupt
            kwargs["on_eval"] = stop
        result = self.real(*args, **kwargs)
        self.start_steps.append(result.start_step)
        return result


def run_compare(losses, out, *, plots=False, **kw):
    options = {"data": DATA, "seeds": 2, "train": CONFIG, "model": "unet", **TINY, **kw}
    experiment = Experiment(losses=tuple(losses), out=out, plots=plots, **options)
    return compare_losses(experiment, progress=False)


def test_interrupted_compare_resumes_and_does_not_redo_finished_runs(tmp_path, monkeypatch, capsys):
    losses = ["cross_entropy", "soft-miou"]
    first = CountingFit(interrupt_call=2)
    monkeypatch.setattr(runs_mod, "fit", first)
    with pytest.raises(KeyboardInterrupt):
        run_compare(losses, tmp_path / "cmp")
    assert first.calls == 2
    run0 = tmp_path / "cmp" / "runs" / loss_slug(losses[0])
    assert (run0 / "seed0" / "metrics.json").is_file()
    assert (run0 / "seed1" / "checkpoint.pt").is_file()
    assert not (run0 / "seed1" / "metrics.json").exists()
    assert not (tmp_path / "cmp" / "compare.md").exists()

    second = CountingFit()
    monkeypatch.setattr(runs_mod, "fit", second)
    result = run_compare(losses, tmp_path / "cmp")
    assert second.calls == 3  # the finished run is reused, the interrupted one resumes
    assert second.start_steps == [2, 0, 0]
    assert [(r.loss, r.seed, r.cached) for r in result.runs] == [
        (losses[0], 0, True), (losses[0], 1, False), (losses[1], 0, False), (losses[1], 1, False)]
    out = capsys.readouterr().out
    assert "[1/4] " + losses[0] + " seed 0" in out and "[4/4] " + losses[1] + " seed 1" in out

    # the resumed run ends exactly where an uninterrupted one does
    ref = train_run(losses[0], DATA, config=dataclasses.replace(CONFIG, seed=1),
                    out=tmp_path / "ref", progress=False, **TINY)
    assert result.runs[1].metrics == pytest.approx(ref.metrics, nan_ok=True)

    # all runs in the table and the files; a third call trains nothing
    md = result.markdown_path.read_text()
    assert all(f"| {loss} |" in md for loss in losses)
    with open(result.csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * (len(METRIC_NAMES) + 1)
    assert {(r["loss"], r["seed"]) for r in rows} == {(lo, s) for lo in losses for s in "01"}
    data = json.loads(result.json_path.read_text())
    assert len(data["runs"]) == 4 and set(data["summary"]) == set(losses)
    third = CountingFit()
    monkeypatch.setattr(runs_mod, "fit", third)
    again = run_compare(losses, tmp_path / "cmp")
    assert third.calls == 0 and all(r.cached for r in again.runs)
    for cached, fresh in zip(again.runs, result.runs):
        assert cached.metrics == pytest.approx(fresh.metrics, nan_ok=True)
    assert not (tmp_path / "cmp" / "plots").exists()  # plots=False


def test_a_failing_plot_is_a_warning_not_a_lost_comparison(tmp_path, monkeypatch):
    import autoloss.report.compare_plots

    def broken(folder, **kw):
        raise RuntimeError("no ink")

    monkeypatch.setattr(autoloss.report.compare_plots, "plot_comparison", broken)
    folder = tmp_path / "cmp"
    with pytest.warns(UserWarning, match=r"the comparison finished, but drawing its plots failed: "
                                         r"RuntimeError\('no ink'\); retry with autoloss plot "
                                         + re.escape(str(folder))):
        result = compare_losses(Experiment(losses=("soft-miou",), data=DATA, seeds=1,
                                           train=CONFIG, out=folder, plots=True, **TINY),
                                progress=False)
    assert result.json_path.is_file() and len(result.runs) == 1


def test_done_when_tiny(tmp_path):
    """`autoloss compare --losses cross_entropy,lovasz_softmax,asl-voc-miou --data shapes
    --seeds 2` in a tiny version (API level; the CLI is covered in test_train_cli)."""
    losses = ["cross_entropy", "lovasz_softmax", "asl-voc-miou"]
    result = run_compare(losses, tmp_path / "cmp")
    assert len(result.runs) == 6 and not any(r.cached for r in result.runs)
    rows = [line for line in result.table.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0][2:] for r in rows] == losses
    for run in result.runs:
        assert set(run.metrics) == set(METRIC_NAMES)
        stored = json.loads((run.out / "metrics.json").read_text())
        # metrics.json holds an independent check: the trainer's evaluate on the checkpoint
        model, meta = load_checkpoint(run.out / "checkpoint.pt")
        assert meta["step"] == CONFIG.steps
        ref = trainer_evaluate(model, load_dataset(DATA, "test"))
        assert stored["test"] == pytest.approx({k: (None if v != v else v) for k, v in ref.items()})
        assert stored["seed"] == run.seed and stored["train_time"] > 0


def test_changed_setup_in_a_finished_run_folder_is_an_error(tmp_path):
    train_run("soft-miou", DATA, config=CONFIG, out=tmp_path / "r", progress=False, **TINY)
    other = dataclasses.replace(CONFIG, steps=5)
    with pytest.raises(ValueError, match="another setup.*steps"):
        train_run("soft-miou", DATA, config=other, out=tmp_path / "r", progress=False, **TINY)
    with pytest.raises(ValueError, match="another setup.*loss_spec"):
        train_run("soft-mdice", DATA, config=CONFIG, out=tmp_path / "r", progress=False, **TINY)
    # fields that do not change the weights may differ
    free = dataclasses.replace(CONFIG, eval_every=4, num_threads=2)
    assert train_run("soft-miou", DATA, config=free, out=tmp_path / "r", progress=False,
                     **TINY).cached


def run(loss: str, values: list[float], times: float = 10.0) -> list[RunResult]:
    return [RunResult(loss, s, Path("."), {"miou": v, "bf1": 1 - v}, times, cached=False)
            for s, v in enumerate(values)]


def test_format_table_mean_std_in_points_and_no_marks_without_reference():
    runs = run("a", [0.40, 0.50, 0.60]) + run("b", [0.70, 0.72], times=20.0) + run("c", [0.1])
    table = format_table(runs)
    lines = table.splitlines()
    assert lines[0] == "| loss | miou | bf1 | train time (s) | runs |"
    a, b, c = lines[2:]
    sd_a = statistics.stdev([40.0, 50.0, 60.0])  # sample std, in points
    sd_b = statistics.stdev([70.0, 72.0])
    assert a == f"| a | 50.00 ± {sd_a:.2f} | 50.00 ± {sd_a:.2f} | 10 | 3 |"
    assert b == f"| b | 71.00 ± {sd_b:.2f} | 29.00 ± {sd_b:.2f} | 20 | 2 |"
    assert c == "| c | 10.00 | 90.00 | 10 | 1 |"  # one run: no std


def test_format_table_bold_only_where_the_paired_interval_excludes_zero():
    # "up" beats the reference by 10 +- 1 points on every seed (significant); "noisy" has a
    # higher mean than "up" but its paired differences straddle zero (not significant)
    runs = (run("ref", [0.50, 0.60, 0.70]) + run("up", [0.61, 0.69, 0.81])
            + run("noisy", [0.90, 0.40, 0.80]))
    lines = format_table(runs, reference="ref", metrics=["miou", "bf1"]).splitlines()
    assert lines[2].startswith("| ref | 60.00 ± 10.00 | 40.00 ± 10.00 |")
    assert lines[3].startswith("| up | **70.33 ± 10.07** | 29.67 ± 10.07 ▾ |")
    assert "**" not in lines[4] and "▾" not in lines[4]


def test_format_table_nan_and_metric_order():
    runs = run("a", [0.5]) + run("b", [0.5])
    runs.append(RunResult("c", 0, Path("."), {"miou": float("nan"), "bf1": 0.2}, 1.0,
                          cached=False))
    lines = format_table(runs, metrics=["bf1", "miou"]).splitlines()
    assert lines[2] == "| a | 50.00 | 50.00 | 10 | 1 |"
    assert lines[4] == "| c | 20.00 | n/a | 1 | 1 |"


def test_build_loss_takes_the_datasets_ignore_index(tmp_path):
    assert build_loss("asl-voc-miou", ignore_index=11).ignore_index == 11  # preset says 255
    assert build_loss("asl-voc-miou", ignore_index=None).ignore_index is None
    assert build_loss("soft-miou", ignore_index=255).ignore_index == 255
    spec = tmp_path / "mix.yaml"
    spec.write_text("combine:\n  - {name: surrogate, metric: miou, ignore_index: 3, weight: 0.5}\n"
                    "  - {name: surrogate, metric: mdice, weight: 0.5}\n")
    loss = build_loss(spec, ignore_index=11)
    assert [part.ignore_index for part in loss.losses] == [11, 11]
    assert loss.weights == [0.5, 0.5]


def test_loss_slug():
    assert loss_slug("asl-voc-miou") == "asl-voc-miou"
    assert loss_slug("results/search-miou/best_loss.yaml") == "search-miou-best_loss"
    assert (loss_slug("results/study-bf1-camvid/search/best_loss.yaml")
            == "study-bf1-camvid-best_loss")
    assert loss_slug("losses/tversky.yaml") == "tversky"
    assert loss_slug("my loss.yml") == "my-loss"
    assert compare_mod._slugs(["a/best.yaml", "b/best.yaml", "c"]) == ["a-best.yaml",
                                                                       "b-best.yaml", "c"]
    # a search's own loss files are named by their search, so a run's folder does not depend
    # on which other losses a panel holds (two panels sharing a runs folder share its runs)
    for stem in ("identity_loss", "middle_loss", "trial_12_loss"):
        assert (loss_slug(f"results/study-bf1-camvid/search/{stem}.yaml")
                == f"study-bf1-camvid-{stem}")
    one = compare_mod._slugs(["results/study-bf1-camvid/search/identity_loss.yaml"])
    both = compare_mod._slugs(["results/study-bf1-camvid/search/identity_loss.yaml",
                               "results/study-miou-bf1-camvid/search/identity_loss.yaml"])
    assert one == both[:1] == ["study-bf1-camvid-identity_loss"]


def test_compare_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="distinct"):
        run_compare(["soft-miou", "soft-miou"], tmp_path)
    with pytest.raises(ValueError, match="unknown loss 'soft-mio'"):
        run_compare(["soft-mio"], tmp_path)
    with pytest.raises(ValueError, match="seeds must be >= 1, but got seeds=0"):
        run_compare(["soft-miou"], tmp_path, seeds=0)
    with pytest.raises(ValueError, match="test_split='tset' is not a split"):
        run_compare(["soft-miou"], tmp_path, test_split="tset")


def test_two_processes_on_one_run_train_it_once(tmp_path, monkeypatch):
    """Two comparisons reaching one run folder at once (two ``compare`` commands on one panel):
    the second waits for the run's lock and then finds the run finished."""
    import threading

    import autoloss.retrain.runs as runs_module

    calls = []
    real_fit = runs_module.fit

    def slow_fit(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runs_module, "fit", slow_fit)
    results = []

    def one():
        results.append(train_run("soft-miou", DATA, config=CONFIG, out=tmp_path / "r",
                                 progress=False, **TINY))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(r.cached for r in results) == [False, True]
    assert results[0].metrics == results[1].metrics


def test_every_run_records_the_checkpoint_it_started_from_and_the_code(tmp_path):
    """Finetune protocol: each run's run.json and metrics.json name the sha256 of its seed's
    pretraining checkpoint and the code that trained it (git commit when run from a checkout)."""
    from autoloss.utils.provenance import code_version, file_sha256

    result = run_compare(["cross_entropy", "soft-miou"], tmp_path / "cmp",
                         protocol="finetune", pretrain={"steps": 2})
    assert code_version()["autoloss"] and "git_commit" in code_version()
    for run in result.runs:
        start = tmp_path / "cmp" / "pretrain" / f"seed{run.seed}" / "checkpoint.pt"
        for name in ("run.json", "metrics.json"):
            provenance = json.loads((run.out / name).read_text())["provenance"]
            assert provenance["init_sha256"] == file_sha256(start)
            assert provenance["code"] == code_version()
    for run in result.pretrain_runs:  # trained from the seed's initial weights
        assert json.loads((run.out / "metrics.json").read_text())["provenance"]["init_sha256"] is None
