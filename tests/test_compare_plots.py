"""Tests for autoloss.report.comparison and autoloss.report.compare_plots: reading and drawing a comparison
folder, from a synthetic folder (compare.json + logs, no checkpoints) and from a real tiny
``compare_losses`` run, also through ``autoloss plot``; the data drawn is the data given (checked
on the figure objects); missing pieces are warnings, not errors."""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss.cli import plot as plot_cli
from autoloss.report import compare_plots, comparison

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRICS = ("miou", "fwiou", "macc", "gacc", "mdice", "biou", "bf1", "miou_image")


def write_comparison(root: Path, *, losses: Sequence[str], seeds: int, class_names: Sequence[str],
                     evals: int = 4, eval_every: int = 50, protocol: str = "scratch",
                     significant: Sequence[str] = (), rng_seed: int = 0) -> Path:
    """A comparison folder in the layout of ``autoloss compare``: compare.json, and per run
    run.json and a log.jsonl whose validation scores rise to a plateau (no metrics.json, no
    checkpoints). Loss k's test mIoU is 0.50 + 0.01 k with seed noise of std 0.004."""
    rng = np.random.default_rng(rng_seed)
    steps = eval_every * evals

    def write_run(folder: Path, final: float) -> dict[str, float]:
        folder.mkdir(parents=True)
        lines = []
        for step in range(1, steps + 1):
            if step % 10 == 0:
                lines.append({"step": step, "loss": 2.0 * np.exp(-step / steps) + 0.05 * rng.random(),
                              "lr": 0.01, "time": 0.1 * step})
            if step % eval_every == 0:
                rise = 1 - np.exp(-3 * step / steps)
                scores = {m: float(final * rise * (0.6 if m == "bf1" else 1)
                                   + 0.015 * rng.standard_normal()) for m in METRICS}
                lines.append({"step": step, "eval": scores})
        (folder / "log.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
        return {m: float(final * (0.6 if m == "bf1" else 1) + 0.004 * rng.standard_normal())
                for m in METRICS}

    runs, pretrain = [], []
    for k, loss in enumerate(losses):
        for seed in range(seeds):
            rel = f"runs/{loss}/seed{seed}"
            metrics = write_run(root / rel, 0.50 + 0.01 * k)
            (root / rel / "run.json").write_text(json.dumps({"data": "synthetic", "loss": loss}))
            per_class = {c: float(np.clip(0.9 - 0.07 * j + 0.01 * k + 0.02 * rng.standard_normal(),
                                          0, 1)) for j, c in enumerate(class_names)}
            runs.append({"loss": loss, "seed": seed, "dir": rel, "metrics": metrics,
                         "per_class_iou": per_class, "train_time": 300.0})
    if protocol == "finetune":
        for seed in range(seeds):
            pretrain.append({"seed": seed, "dir": f"pretrain/seed{seed}",
                             "metrics": write_run(root / f"pretrain/seed{seed}", 0.45)})
    reference = losses[0]
    paired = {loss: {m: {"mean": 0.01, "low": 0.002 if loss in significant else -0.004,
                         "high": 0.02, "wins": seeds, "n": seeds,
                         "significant": loss in significant} for m in METRICS}
              for loss in losses if loss != reference}
    summary = {loss: {m: {"mean": float(np.mean(v)), "n": seeds,
                          "std": float(np.std(v, ddof=1)) if seeds > 1 else None}
                      for m in METRICS
                      for v in [[r["metrics"][m] for r in runs if r["loss"] == loss]]}
               for loss in losses}
    (root / "compare.json").write_text(json.dumps({
        "data": "camvid:../shared/datasets/camvid?size=90x120", "protocol": protocol,
        "reference": reference, "test_split": "test", "losses": list(losses),
        "metrics": list(METRICS), "class_names": list(class_names), "runs": runs,
        "pretrain_runs": pretrain, "summary": summary, "paired": paired}, indent=1))
    return root


def _check_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] >= 200 and image.shape[1] >= 300 and image.std() > 10


def _svg_text(path: Path) -> str:
    return " ".join(ET.parse(path).getroot().itertext())


LOSSES = ("cross_entropy", "lovasz_softmax", "soft-miou")
CLASSES = ("Sky", "Building", "Pole", "Road")


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    return write_comparison(tmp_path / "cmp", losses=LOSSES, seeds=3, class_names=CLASSES,
                            protocol="finetune", significant=("soft-miou",))


# ---- a synthetic folder (no checkpoints) -------------------------------------------------------

def test_synthetic_folder_draws_all_but_the_overlays(synthetic: Path) -> None:
    with pytest.warns(UserWarning, match=r"overlays-cross_entropy-vs-soft-miou of .* skipped: no "
                                         r"checkpoint.pt in .*seed0 \(cross_entropy seed 0\)"):
        written = compare_plots.plot_comparison(synthetic)
    names = [p.name for p in written]
    assert names == [f"{f}.{e}" for f in ("bars", "curves", "pretrain", "per_class_iou")
                     for e in ("png", "svg")]
    assert all(p.parent == synthetic / "plots" for p in written)
    for path in written[::2]:
        _check_png(path)
    text = _svg_text(synthetic / "plots" / "bars.svg")
    assert "paired interval vs the reference excludes 0" in text and "lovasz_softmax" in text


def test_read_comparison(synthetic: Path) -> None:
    comp = comparison.read_comparison(synthetic)
    assert comp.losses == list(LOSSES) and comp.reference == "cross_entropy"
    assert comp.protocol == "finetune" and len(comp.pretrain_runs) == 3
    assert comp.class_names == list(CLASSES) and len(comp.runs) == 9
    assert all(r.dir == synthetic / "runs" / r.loss / f"seed{r.seed}" for r in comp.runs)
    assert comp.significant("soft-miou", "miou") is True
    assert comp.significant("lovasz_softmax", "miou") is False
    assert comp.significant("cross_entropy", "miou") is None
    with pytest.raises(FileNotFoundError, match="holds no compare.json"):
        comparison.read_comparison(synthetic / "runs")
    assert compare_plots.read_comparison is comparison.read_comparison  # still importable there


def test_curves_one_line_and_legend_entry_per_loss(synthetic: Path) -> None:
    comp = comparison.read_comparison(synthetic)
    fig = compare_plots._curves_figure(comp, ["miou", "bf1"])
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(LOSSES)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == list(LOSSES)
    logs = [compare_plots.read_training_log(synthetic / f"runs/lovasz_softmax/seed{s}/log.jsonl")
            for s in range(3)]
    seeds = np.array([[v for _, v in evals["miou"]] for _, evals in logs]) * 100
    line = ax.get_lines()[1]
    np.testing.assert_allclose(line.get_xdata(), [50, 100, 150, 200])
    np.testing.assert_allclose(line.get_ydata(), seeds.mean(axis=0))
    band = ax.collections[1].get_paths()[0].vertices[:, 1]  # fill_between: the min-max polygon
    assert np.isclose(band.min(), seeds.min()) and np.isclose(band.max(), seeds.max())


def test_bars_heights_seeds_and_significance(synthetic: Path) -> None:
    comp = comparison.read_comparison(synthetic)
    fig = compare_plots._bars_figure(comp, ["miou"])
    ax = fig.axes[0]
    bars = ax.patches[:len(LOSSES)]
    means = [np.mean([100 * r.metrics["miou"] for r in comp.runs_of(loss)]) for loss in LOSSES]
    np.testing.assert_allclose([b.get_height() for b in bars], means)
    assert [bool(b.get_hatch()) for b in bars] == [False, False, True]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and np.isclose(dashed[0].get_ydata()[0], means[0])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LOSSES)


def test_per_class_bars(synthetic: Path) -> None:
    comp = comparison.read_comparison(synthetic)
    fig = compare_plots._per_class_figure(comp)
    top, diff = fig.axes
    assert len(top.patches) == len(LOSSES) * len(CLASSES)
    assert len(diff.patches) == (len(LOSSES) - 1) * len(CLASSES)
    sky = [np.mean([100 * r.per_class_iou["Sky"] for r in comp.runs_of(loss)]) for loss in LOSSES]
    heights = [p.get_height() for p in top.patches][::len(CLASSES)]  # first class of each loss
    np.testing.assert_allclose(heights, sky)
    assert [t.get_text() for t in diff.get_xticklabels()] == list(CLASSES)


def test_compressed_logs_draw_the_same_curves(synthetic: Path) -> None:
    """A folder whose run logs are gzip-compressed (``log.jsonl.gz``, issue 27) draws the same
    validation and pretraining curves, with no warning about missing logs."""
    from autoloss.utils.run_logs import compress_log

    def drawn() -> list:
        comp = comparison.read_comparison(synthetic)
        figs = [compare_plots._curves_figure(comp, METRICS[:3]),
                compare_plots._pretrain_figure(comp, METRICS[:3])]
        return [[(line.get_label(), line.get_xydata().tolist()) for ax in fig.axes
                 for line in ax.get_lines()] for fig in figs]

    before = drawn()
    logs = sorted(synthetic.rglob("log.jsonl"))
    for log in logs:
        compress_log(log)
    assert not list(synthetic.rglob("log.jsonl")) and len(list(synthetic.rglob("log.jsonl.gz"))) == 12
    assert drawn() == before and all(before)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = compare_plots.plot_comparison(synthetic, formats=("png",))
    assert not [w for w in caught if "log.jsonl" in str(w.message)], [str(w.message) for w in caught]
    assert [p.name for p in written] == ["bars.png", "curves.png", "pretrain.png",
                                         "per_class_iou.png"]


def test_missing_pieces_warn_and_skip(tmp_path: Path) -> None:
    root = write_comparison(tmp_path / "one", losses=LOSSES[:2], seeds=1, class_names=CLASSES)
    for log in root.glob("runs/*/seed0/log.jsonl"):
        log.unlink()
    info = json.loads((root / "compare.json").read_text())
    for run in info["runs"]:
        del run["per_class_iou"]
    del info["class_names"], info["paired"]
    (root / "compare.json").write_text(json.dumps(info))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = compare_plots.plot_comparison(root, formats=("svg",))
    messages = " | ".join(str(w.message) for w in caught)
    assert [p.name for p in written] == ["bars.svg"]
    for expected in ("one seed per loss", "no log.jsonl for cross_entropy seed 0, lovasz_softmax",
                     f"curves of {root} skipped", f"per_class_iou of {root} skipped",
                     "no checkpoint.pt"):
        assert expected in messages
    assert "no paired intervals" in _svg_text(written[0])


def test_argument_errors(synthetic: Path) -> None:
    with pytest.raises(ValueError, match="did you mean 'lovasz_softmax'"):
        compare_plots.plot_comparison(synthetic, pair="lovasz_sofmax")
    with pytest.raises(ValueError, match="pair .*reference"):
        compare_plots.plot_comparison(synthetic, pair="cross_entropy")
    with pytest.raises(ValueError, match="did you mean 'miou'"):
        compare_plots.plot_comparison(synthetic, metrics=("mio",))
    with pytest.raises(ValueError, match="n_images must be a positive int"):
        compare_plots.plot_comparison(synthetic, n_images=0)


def test_image_scores() -> None:
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 9]])
    pred = np.array([[0, 0, 0, 1], [0, 0, 2, 2]])  # 9 ignored (num_classes 3)
    miou, acc = compare_plots._image_scores(pred, gt, 3)
    # class 0: 4 / 5, class 1: 1 / 3, class 2: 0 / 1 (predicted, absent from the ground truth)
    assert np.isclose(miou, 100 * (4 / 5 + 1 / 3 + 0) / 3) and np.isclose(acc, 100 * 5 / 7)


# ---- a real tiny comparison ----------------------------------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-loss, two-seed compare on embedded data, its figures drawn at the end (the
    default), the folder moved after writing (run dirs are found from the new place)."""
    from autoloss.retrain.compare import compare_losses
    from autoloss.retrain.experiment import Experiment
    from autoloss.train.trainer import TrainConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = tmp_path_factory.mktemp("written") / "cmp"
        train = TrainConfig(steps=4, batch_size=2, eval_every=2, log_every=1, num_threads=1)
        compare_losses(Experiment(losses=("cross_entropy", "lovasz_softmax"),
                                  data="shapes?n=16&size=32", seeds=2, train=train, out=first,
                                  width=4, depth=2), progress=False)
        moved = tmp_path_factory.mktemp("moved") / "cmp"
        shutil.move(first, moved)
        yield moved
    finally:
        torch.set_num_threads(threads)


def test_compare_losses_ends_by_drawing_its_figures(real: Path) -> None:
    assert sorted(p.name for p in (real / "plots").iterdir()) == sorted(
        f"{name}.{fmt}" for name in ("bars", "curves", "per_class_iou",
                                     "overlays-cross_entropy-vs-lovasz_softmax")
        for fmt in ("png", "svg"))
    _check_png(real / "plots" / "bars.png")


def test_real_compare_draws_every_figure(real: Path, tmp_path: Path) -> None:
    comp = comparison.read_comparison(real)
    assert comp.reference == "cross_entropy" and comp.data == "shapes?n=16&size=32"
    assert comp.class_names[0] == "background" and all(r.per_class_iou for r in comp.runs)
    assert all(r.dir == real / "runs" / r.loss / f"seed{r.seed}" for r in comp.runs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = compare_plots.plot_comparison(real, out=tmp_path, n_images=2, formats=("svg",))
    assert [p.name for p in written] == ["bars.svg", "curves.svg", "per_class_iou.svg",
                                         "overlays-cross_entropy-vs-lovasz_softmax.svg"]
    from autoloss.data import load_dataset

    last = len(load_dataset(comp.data, "test")) - 1
    text = _svg_text(written[-1])
    assert "test image #0" in text and f"test image #{last}" in text  # 2 evenly spaced images
    assert text.count("mIoU") == 4 and "lovasz_softmax" in text and "background" in text


def test_cli_plots_a_comparison_folder(real: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="autoloss")
    plot_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plot", str(real), "--pair", "lovasz_softmax", "-n", "1",
                              "--format", "png", "--out", str(tmp_path / "p")])
    assert args.func(args) == 0
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    assert printed == [tmp_path / "p" / f"{name}.png" for name in
                       ("bars", "curves", "per_class_iou", "overlays-cross_entropy-vs-lovasz_softmax")]
    assert all(p.is_file() for p in printed)
    args = parser.parse_args(["plot", "asl-voc-miou", "--pair", "x", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--pair .*comparison folder"):
        args.func(args)
