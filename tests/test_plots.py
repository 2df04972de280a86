"""Tests for autoloss.report.plots and autoloss.cli.plot: every figure is written (PNG + SVG), and the
data drawn on it is the data given (checked through the returned files and the study helpers)."""

from __future__ import annotations

import argparse
import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from autoloss.cli import plot as plot_cli
from autoloss.losses import load_loss, save_loss
from autoloss.report import overlay_plots, plots, search_plots
from autoloss.search import run_plots

optuna.logging.set_verbosity(optuna.logging.WARNING)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path, *, min_size: tuple[int, int] = (300, 200)) -> np.ndarray:
    """A real, non-blank PNG of at least ``min_size`` (width, height) pixels."""
    assert path.suffix == ".png" and path.read_bytes()[:8] == PNG_MAGIC
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] >= min_size[0] and image.shape[0] >= min_size[1], image.shape
    assert image.std() > 10, "the figure is blank"
    return image


def _svg_text(path: Path) -> str:
    """The text of an SVG file (parsed, so a truncated file fails); fonts are kept as text."""
    assert path.suffix == ".svg"
    root = ET.parse(path).getroot()
    return " ".join(t for t in root.itertext())


# ---- curves ------------------------------------------------------------------------------------

def test_curves_presets_and_saved_yaml(tmp_path: Path) -> None:
    loss = load_loss("asl-voc-miou")
    saved = save_loss(loss, tmp_path / "my_search.yaml")
    paths = plots.plot_curves(["asl-voc-miou", saved, "soft-miou"], out=tmp_path / "out" / "c")
    assert [p.name for p in paths] == ["c.png", "c.svg"]
    _check_png(paths[0])
    text = _svg_text(paths[1])
    for word in ("inter", "union", "asl-voc-miou", "my_search", "soft-miou", "identity"):
        assert word in text


def test_curves_one_panel_per_curve_name(tmp_path: Path) -> None:
    # bf1 has four curves -> a 2x2 grid, taller than the 1x2 grid of miou
    bf1_png, bf1_svg = plots.plot_curves(["asl-voc-bf1"], out=tmp_path / "bf1")
    (miou_png,) = plots.plot_curves(["asl-voc-miou"], out=tmp_path / "miou.png", formats="png")
    assert miou_png == tmp_path / "miou.png" and not (tmp_path / "miou.svg").exists()
    bf1, miou = _check_png(bf1_png), _check_png(miou_png)
    assert bf1.shape[0] > 1.6 * miou.shape[0]
    text = _svg_text(bf1_svg)
    for name in ("edge_and_x", "edge_and_eroded", "edge_or_x", "edge_or_eroded"):
        assert name in text


def test_curves_of_combination_and_errors(tmp_path: Path) -> None:
    miou, fw = load_loss("asl-voc-miou"), load_loss("asl-voc-fwiou")
    combo = load_loss({"combine": [{**miou.to_dict(), "weight": 0.5},
                                   {**fw.to_dict(), "weight": 0.5}]})
    curves = plots.curves_of(combo)
    assert list(curves) == ["inter", "union", "fwiou:inter", "fwiou:union"]
    assert curves["fwiou:union"] == fw.curves["union"] and curves["inter"] == miou.curves["inter"]
    assert plots.curves_of(torch.nn.CrossEntropyLoss()) == {}
    with pytest.raises(ValueError, match="no curves"):
        plots.plot_curves([torch.nn.CrossEntropyLoss()], out=tmp_path / "x")
    with pytest.raises(ValueError, match="labels must have one entry per loss"):
        plots.plot_curves(["asl-voc-miou"], labels=["a", "b"], out=tmp_path / "x")
    with pytest.raises(ValueError, match="formats"):
        plots.plot_curves(["asl-voc-miou"], out=tmp_path / "x", formats=("jpg",))
    with pytest.raises(ValueError, match="unknown loss"):
        plots.plot_curves(["asl-voc-mio"], out=tmp_path / "x")


# ---- search history and importance -------------------------------------------------------------

DISTS = {"inter.0": FloatDistribution(0.0, 1.0), "inter.1": FloatDistribution(0.0, 1.0),
         "union.0": FloatDistribution(0.0, 1.0)}


def _study(n_complete: int = 12) -> optuna.Study:
    """A study whose value depends strongly on inter.0, weakly on the rest; plus two reference
    trials, pruned trials (with and without reports) and failed trials."""
    rng = np.random.default_rng(0)
    study = optuna.create_study(direction="maximize", study_name="miou-test")
    study.set_user_attr("baseline_ce", 0.42)
    study.set_user_attr("config", {"metric": "miou"})

    def params() -> dict[str, float]:
        return {k: float(v) for k, v in zip(DISTS, rng.random(3))}

    def value(p: dict[str, float]) -> float:
        return 0.3 + 0.4 * p["inter.0"] + 0.01 * p["union.0"]

    ident = {"inter.0": 0.5, "inter.1": 0.5, "union.0": 0.5}
    study.add_trial(create_trial(params=ident, distributions=DISTS, value=value(ident),
                                 user_attrs={"reference": "identity"}))
    p = params()
    study.add_trial(create_trial(params=p, distributions=DISTS, value=value(p),
                                 user_attrs={"reference": "paper:asl-voc-miou"}))
    for i in range(max(n_complete - 2, 0)):
        p = params()
        study.add_trial(create_trial(params=p, distributions=DISTS, value=value(p),
                                     user_attrs={"metrics": {"miou": value(p), "gacc": 0.8}}))
        if i % 4 == 1:
            study.add_trial(create_trial(state=TrialState.PRUNED, params=params(),
                                         distributions=DISTS,
                                         intermediate_values={10: 0.2, 20: 0.25}))
        if i % 4 == 3:
            study.add_trial(create_trial(state=TrialState.FAIL, params=params(),
                                         distributions=DISTS,
                                         user_attrs={"fail_reason": "non-finite loss"}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params=params(), distributions=DISTS))
    return study


def test_history(tmp_path: Path) -> None:
    study = _study()
    path = search_plots.plot_history(study, out=tmp_path / "history")
    assert path == tmp_path / "history.png" and (tmp_path / "history.svg").is_file()
    _check_png(path)
    text = _svg_text(tmp_path / "history.svg")
    states = [t.state for t in study.trials]
    n_pruned_reported = sum(1 for t in study.trials
                            if t.state == TrialState.PRUNED and t.intermediate_values)
    assert f"complete ({states.count(TrialState.COMPLETE)})" in text
    assert f"pruned, last reported value ({n_pruned_reported})" in text
    assert "pruned before reporting (1)" in text
    assert f"failed ({states.count(TrialState.FAIL)})" in text
    assert "cross-entropy baseline (0.42)" in text  # from the study user attr
    assert "identity" in text and "paper:asl-voc-miou" in text
    assert "miou (higher is better)" in text and "best so far" in text
    explicit = search_plots.plot_history(study, out=tmp_path / "h2", baseline=0.5, formats="svg")
    assert "cross-entropy baseline (0.5)" in _svg_text(explicit)


def test_history_of_an_empty_study(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="empty")
    path = search_plots.plot_history(study, out=tmp_path / "empty", formats="svg")
    assert "no trials yet" in _svg_text(path)


def test_importance_ranks_the_parameter_that_matters(tmp_path: Path) -> None:
    study = _study(n_complete=30)
    path = search_plots.plot_importance(study, out=tmp_path / "imp")
    assert path == tmp_path / "imp.png"
    _check_png(path, min_size=(300, 100))
    text = _svg_text(tmp_path / "imp.svg")
    assert all(name in text for name in DISTS)
    scores, _ = search_plots._importances(study)
    assert max(scores, key=scores.get) == "inter.0"


def test_importance_needs_two_complete_trials(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study(direction="maximize", study_name="tiny")
    study.add_trial(create_trial(params={"inter.0": 0.3}, value=0.5,
                                 distributions={"inter.0": FloatDistribution(0.0, 1.0)}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"inter.0": 0.4},
                                 distributions={"inter.0": FloatDistribution(0.0, 1.0)}))
    with caplog.at_level(logging.WARNING, logger="autoloss.report.search_plots"):
        assert search_plots.plot_importance(study, out=tmp_path / "imp") is None
    assert "at least 2 complete trials" in caplog.text
    assert not list(tmp_path.iterdir())


# ---- training logs -----------------------------------------------------------------------------

def _write_log(path: Path, *, scale: float) -> Path:
    lines = []
    for step in range(10, 101, 10):
        lines.append({"step": step, "loss": scale / step, "lr": 0.01, "time": step / 10})
        if step % 50 == 0:
            lines.append({"step": step, "eval": {"miou": step / 200, "bf1": None}})
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return path


def test_training_log_reading_and_plot(tmp_path: Path) -> None:
    a = _write_log(tmp_path / "a.jsonl", scale=1.0)
    b = _write_log(tmp_path / "b.jsonl", scale=2.0)
    losses, metrics = plots.read_training_log(a)
    assert losses[0] == (10, 0.1) and len(losses) == 10
    assert metrics == {"miou": [(50, 0.25), (100, 0.5)]}  # null bf1 skipped
    path = plots.plot_training([a, b], out=tmp_path / "train")
    _check_png(path)
    text = _svg_text(tmp_path / "train.svg")
    assert "eval miou" in text and "training loss" in text and " a " in f" {text} "
    with pytest.raises(ValueError, match="not in the logs"):
        plots.plot_training(a, out=tmp_path / "t", metrics=["biou"])
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        plots.read_training_log(tmp_path / "bad.jsonl")


def test_smoothing_has_no_lag() -> None:
    line = np.linspace(1.0, 0.0, 300)  # a centred average reproduces a straight line exactly
    assert np.allclose(plots.smooth(line)[6:-6], line[6:-6])
    noisy = line + np.random.default_rng(0).normal(0, 0.1, 300)
    assert np.abs(plots.smooth(noisy) - line).std() < 0.5 * np.abs(noisy - line).std()


# ---- overlays ----------------------------------------------------------------------------------

def test_palette_is_fixed_and_distinct() -> None:
    pal = overlay_plots.class_palette(25)
    assert pal.shape == (25, 3) and np.array_equal(pal, overlay_plots.class_palette(25))
    assert len({tuple(np.round(c, 4)) for c in pal}) == 25
    assert not np.any(np.all(pal < 0.05, axis=1))  # black is reserved for ignored pixels
    label = np.array([[0, 1], [255, 2]])
    rgb = overlay_plots.colourise(label, pal[:3])
    assert np.array_equal(rgb[1, 0], [0, 0, 0]) and np.array_equal(rgb[0, 1], pal[1])


def test_overlays_of_a_constant_model(tmp_path: Path) -> None:
    from autoloss.data import load_dataset
    from autoloss.train.checkpoint import CHECKPOINT_FORMAT, write_checkpoint
    from autoloss.train.models import config_to_dict, model_from_name

    pytest.importorskip("autoloss.train.trainer", reason="autoloss.train.trainer (load_checkpoint, predict)")
    val = load_dataset("shapes", "val")
    model = model_from_name("unet", in_channels=val.in_channels, num_classes=val.num_classes,
                            width=4, depth=1, seed=0)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert head.out_channels == val.num_classes
    with torch.no_grad():  # every pixel predicted as class 2
        head.weight.zero_()
        head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(2), val.num_classes) * 10.0)
    ckpt = tmp_path / "const.pt"
    write_checkpoint(ckpt, {"format": CHECKPOINT_FORMAT, "step": 0, "model": model.state_dict(),
                            "model_config": config_to_dict(model.config),
                            "loss": {"name": "surrogate", "metric": "miou"}})
    path = overlay_plots.plot_overlays(ckpt, "shapes", split="val", n=3, out=tmp_path / "ov",
                               formats="svg")
    text = _svg_text(path)
    assert "ground truth" in text and "trained with miou" in text
    for index in (0, 64, 127):  # n=3 evenly spaced over 128 images
        label = val[index][1].numpy()
        valid = label != val.ignore_index
        assert f"image #{index}" in text
        assert f"prediction (pixel acc {(label[valid] == 2).mean():.3f})" in text
    assert val.class_names[2] in text and f"ignored ({val.ignore_index})" in text
    with pytest.raises(ValueError, match="n must be a positive int"):
        overlay_plots.plot_overlays(ckpt, "shapes", n=0, out=tmp_path / "x")


# ---- run folders and the CLI -------------------------------------------------------------------

def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    storage = f"sqlite:///{run / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="miou-run", direction="maximize")
    for trial in _study().trials:
        study.add_trial(trial)
    for key, value in _study().user_attrs.items():
        study.set_user_attr(key, value)
    (run / "run.json").write_text(json.dumps({"storage": "sqlite:///elsewhere/study.db",
                                              "study": "miou-run"}))
    save_loss(load_loss("soft-miou"), run / "best_loss.yaml")
    _write_log(run / "proxy.jsonl", scale=1.0)
    return run


def test_plot_run(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    study = run_plots.open_run_study(run)  # run.json's storage is stale: falls back to study.db
    assert study.study_name == "miou-run" and len(study.trials) == len(_study().trials)
    assert run_plots.reference_preset(study, "miou") == "asl-voc-miou"
    assert run_plots.reference_preset(None, "bf1") == "asl-voc-bf1"
    written = run_plots.plot_run(run, formats=("svg",))
    assert [p.name for p in written] == ["curves.svg", "history.svg", "importance.svg",
                                         "intermediate.svg", "training.svg"]
    assert all(p.parent == run / "plots" and p.stat().st_size > 1000 for p in written)
    assert "paper: asl-voc-miou" in _svg_text(run / "plots" / "curves.svg")
    with pytest.raises(ValueError, match="nothing to plot"):
        run_plots.plot_run(tmp_path / "run" / "plots")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoloss")
    plot_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_register_curves_run_and_logs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = _parser().parse_args(["plot", "asl-voc-miou", "--out", str(tmp_path / "p"),
                                 "--format", "png"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "p" / "curves-asl-voc-miou.png")]
    run = tmp_path / "lite"  # a run folder without a study: curves and training only
    run.mkdir()
    save_loss(load_loss("soft-miou"), run / "best_loss.yaml")
    log = _write_log(run / "proxy.jsonl", scale=1.0)
    args = _parser().parse_args(["plot", str(run), str(log), "asl-voc-miou",
                                 str(run / "best_loss.yaml"), "--out", str(tmp_path / "q"),
                                 "--format", "svg"])
    assert args.func(args) == 0
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    assert [p.name for p in printed] == ["curves.svg", "training.svg",
                                         "curves-asl-voc-miou+best_loss.svg",
                                         "training-proxy.svg"]
    assert all(p.is_file() and p.parent == tmp_path / "q" for p in printed)
    assert "paper: asl-voc-miou" in _svg_text(printed[0])  # the reference for miou
    args = _parser().parse_args(["plot", "--data", "shapes"])
    with pytest.raises(ValueError, match="--checkpoint and --data go together"):
        args.func(args)
    args = _parser().parse_args(["plot"])
    with pytest.raises(ValueError, match="needs a run folder"):
        args.func(args)


def test_cli_main_when_wired(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from autoloss.cli import app as cli
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "plot" not in sub.choices:
        pytest.skip("autoloss.cli.app does not register the plot subcommand yet")
    assert cli.main(["plot", "asl-voc-miou", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / f"curves-asl-voc-miou.{f}") for f in ("png", "svg")]
    assert cli.main(["plot", "asl-voc-mio", "--out", str(tmp_path)]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_training_curves_of_a_comparison_have_one_legend_entry_per_run(tmp_path: Path) -> None:
    logs = []
    for loss in ("cross_entropy", "focal"):
        for seed in (0, 1):
            (tmp_path / "runs" / loss / f"seed{seed}").mkdir(parents=True)
            logs.append(_write_log(tmp_path / "runs" / loss / f"seed{seed}" / "log.jsonl",
                                   scale=1.0 + seed))
    assert plots.run_labels(logs) == ["cross_entropy/seed0", "cross_entropy/seed1",
                                      "focal/seed0", "focal/seed1"]
    assert plots.run_labels(logs[:1]) == ["log"]
    path = plots.plot_training(logs, out=tmp_path / "train")
    _check_png(path)
    text = _svg_text(tmp_path / "train.svg")
    assert "focal/seed1" in text and "seed0/log" not in text


def test_published_curves_of_a_weighted_sum_are_each_metrics_preset() -> None:
    from autoloss.losses import load_loss
    from autoloss.search.run_plots import _published

    single = load_loss({"name": "surrogate", "metric": "miou"})
    loss, label = _published(None, single)
    assert label == "asl-voc-miou" and set(plots.curves_of(loss)) == {"inter", "union"}
    combo = load_loss({"combine": [{"name": "surrogate", "metric": "miou", "weight": 1.0},
                                   {"name": "surrogate", "metric": "bf1", "weight": 0.5}]})
    loss, label = _published(None, combo)
    assert label == "asl-voc-miou + asl-voc-bf1"
    assert set(plots.curves_of(loss)) == set(plots.curves_of(combo))
    assert _published(None, load_loss("cross_entropy")) is None


def test_default_labels_name_searched_losses_by_their_study() -> None:
    assert plots.default_labels(["cross_entropy", "results/study-miou-camvid/search/best_loss.yaml",
                                 "results/search-miou-camvid/best_loss.yaml", "losses/mine.yaml",
                                 "other/mine.yaml"]) == [
        "cross_entropy", "study-miou-camvid", "search-miou-camvid", "losses/mine", "other/mine"]
    # a search's other loss files: by their search and kind, never two alike
    assert plots.default_labels(["results/study-bf1-camvid/search/identity_loss.yaml",
                                 "results/study-miou-bf1-camvid/search/identity_loss.yaml",
                                 "results/preregistered/search-miou-camvid/middle_loss.yaml"]) == [
        "study-bf1-camvid identity", "study-miou-bf1-camvid identity", "search-miou-camvid middle"]


# ---- Pareto front and per-trial values (autoloss.report.search_plots) ---------------------------------

def test_pareto_front_is_the_non_dominated_trials(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "maximize"], study_name="mo")
    study.set_metric_names(["miou", "bf1"])
    study.set_user_attr("baseline_ce", [0.5, 0.3])
    dist = {"x": FloatDistribution(0.0, 1.0)}
    points = [(0.6, 0.2), (0.5, 0.5), (0.3, 0.6), (0.4, 0.4), (0.55, 0.45)]
    for i, values in enumerate(points):  # (0.4, 0.4) is dominated by (0.5, 0.5)
        study.add_trial(create_trial(params={"x": i / 10}, distributions=dist, values=values,
                                     user_attrs={"reference": "identity"} if i == 0 else {}))
    front = search_plots._front(np.array(points), [True, True])
    assert [points[i] for i in front] == [(0.3, 0.6), (0.5, 0.5), (0.55, 0.45), (0.6, 0.2)]
    assert sorted(t.number for t in study.best_trials) == sorted(int(i) for i in front)
    path = search_plots.plot_pareto(study, out=tmp_path / "pareto")
    _check_png(path)
    text = _svg_text(tmp_path / "pareto.svg")
    assert "Pareto front (4)" in text and "trials (5)" in text
    assert "miou (higher is better)" in text and "bf1 (higher is better)" in text
    assert "cross-entropy (0.500, 0.300)" in text and "identity" in text
    with pytest.raises(ValueError, match="needs a study with 2 objectives"):
        search_plots.plot_pareto(_study(), out=tmp_path / "single")


def test_intermediate_values_mark_where_pruned_trials_stopped(tmp_path: Path) -> None:
    study = _study()
    for values in ({10: 0.3, 20: 0.35, 30: 0.4}, {10: 0.32, 20: 0.36, 30: 0.41}):
        study.add_trial(create_trial(params={"inter.0": 0.1, "inter.1": 0.2, "union.0": 0.3},
                                     distributions=DISTS, value=values[30],
                                     intermediate_values=values))
    path = search_plots.plot_intermediate(study, out=tmp_path / "inter")
    _check_png(path)
    text = _svg_text(tmp_path / "inter.svg")
    reported = [t for t in study.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    assert "complete (2)" in text and f"pruned ({len(reported)}), where it stopped" in text
    assert "cross-entropy baseline (0.42)" in text and "miou at the step" in text
    empty = optuna.create_study(study_name="none")
    assert search_plots.plot_intermediate(empty, out=tmp_path / "none") is None
