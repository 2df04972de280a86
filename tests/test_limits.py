"""Documented limits, checked before anything is allocated, and refused in one line that names
the input, the limit and the way out (docs/errors.md; issue 26)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import autoloss.core.morphology as morphology
from autoloss.cli import app as cli
from autoloss.cli.search import _key_value
from autoloss.core.metrics import MAX_CLASSES, MAX_TOL, MetricAccumulator, MetricOptions, evaluate
from autoloss.errors import InvalidValueError
from autoloss.losses import SurrogateLoss, load_loss
from autoloss.losses._validate import MAX_OPTION
from autoloss.retrain.experiment import experiment_from_dict, read_experiment
from autoloss.train.proxy import ProxyConfig
from autoloss.utils.yaml_files import MAX_YAML_BYTES, MAX_YAML_DEPTH

# ---- tol: at most MAX_TOL pixels; at run time no wider than the image ------------------------


@pytest.mark.parametrize("make", [
    lambda tol: MetricOptions(tol=tol),
    lambda tol: MetricAccumulator(num_classes=3, tol=tol),
    lambda tol: SurrogateLoss(metric="bf1", tol=tol),
    lambda tol: load_loss({"name": "surrogate", "metric": "biou", "tol": tol}),
    lambda tol: ProxyConfig(tol=tol),
    lambda tol: experiment_from_dict({"tol": tol}),
])
def test_tol_above_the_maximum_is_refused_by_every_constructor(make):
    make(MAX_TOL)
    for tol in (MAX_TOL + 1, 10**9, -1):
        with pytest.raises(InvalidValueError, match=rf"tol must be an int in \[0, {MAX_TOL}\].*"
                           rf"but got .*tol={tol}; pass a tolerance of at most {MAX_TOL}"):
            make(tol)


def test_a_loss_file_with_a_huge_tol_is_one_line_naming_the_file(tmp_path, capsys):
    path = tmp_path / "big_tol.yaml"
    path.write_text("name: surrogate\nmetric: bf1\ntol: 1000000000\n")
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and f"at most {MAX_TOL}" in err


def test_evaluate_refuses_a_huge_tol_before_loading_anything(tmp_path, capsys):
    """The checkpoint does not even exist: the tolerance is checked first."""
    code = cli.main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", "shapes",
                     "--tol", "100000"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--tol must be an int in [0, 1024]" in err


def test_a_tol_wider_than_the_image_is_computed_as_the_image(monkeypatch):
    """A tol at least the larger image side (minus 1) selects the whole image: the same scores and
    gradients as that side, and the dilation never pads by more than the image."""
    radii = []
    real_filter = morphology._filter
    monkeypatch.setattr(morphology, "_filter",
                        lambda x, radius, **kw: radii.append(radius) or real_filter(x, radius, **kw))
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randint(0, 3, (2, 6, 9), generator=gen), torch.randint(0, 3, (2, 6, 9),
                                                                               generator=gen)
    wide = evaluate(pred, target, num_classes=3, tol=MAX_TOL, metrics=["biou", "bf1"])
    assert radii and max(radii) == 8
    assert wide == evaluate(pred, target, num_classes=3, tol=8, metrics=["biou", "bf1"])
    logits = torch.randn(2, 3, 6, 9, generator=gen, requires_grad=True)
    grads = []
    for tol in (MAX_TOL, 8):
        loss = SurrogateLoss(metric="bf1", tol=tol, compile=False)(logits, target)
        grads.append((loss.detach(), torch.autograd.grad(loss, logits)[0]))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


# ---- loss options: finite is not enough, the loss must stay finite ---------------------------

HUGE_OPTIONS = [
    {"name": "cross_entropy", "class_weights": [1e308] * 3},
    {"name": "focal", "class_weights": [1.0, 1e308, 1.0]},
    {"name": "focal", "gamma": 1e308},
    {"name": "focal", "alpha": 1e308},
    {"combine": [{"name": "cross_entropy", "weight": 1e308}]},
]


@pytest.mark.parametrize("spec", HUGE_OPTIONS, ids=lambda s: str(s)[:60])
def test_an_option_that_overflows_float32_is_refused_with_its_limit(spec):
    with pytest.raises(InvalidValueError, match=r"at most 1e\+06 .*MAX_OPTION.*but got .*1e\+308"):
        load_loss(spec)


@pytest.mark.parametrize("spec", HUGE_OPTIONS, ids=lambda s: str(s)[:60])
def test_options_at_the_limit_give_a_finite_loss_and_gradient(spec):
    spec = json_replace(spec, 1e308, MAX_OPTION)
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0),
                         requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    loss = load_loss(spec)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def json_replace(value, old, new):
    """``value`` (nested dicts and lists) with every ``old`` replaced by ``new``."""
    if isinstance(value, dict):
        return {k: json_replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [json_replace(v, old, new) for v in value]
    return new if value == old else value


@pytest.mark.parametrize("output_dtype", ["float32", "input"])
def test_rmi_on_an_all_ignore_batch_is_zero_like_every_other_loss(output_dtype):
    logits = torch.randn(2, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    target = torch.full((2, 12, 12), 255)
    loss = load_loss({"name": "rmi", "ignore_index": 255, "output_dtype": output_dtype})
    out = loss(logits, target)
    out.backward()
    assert out.item() == 0.0 and not logits.grad.any()
    assert out.dtype == (torch.float32 if output_dtype == "float32" else torch.float64)
    assert load_loss("cross_entropy", ignore_index=255)(logits, target).item() == 0.0


# ---- YAML files and command-line values ------------------------------------------------------

def test_an_exponent_without_a_dot_in_yaml_is_a_number(tmp_path):
    """``1e-5`` is a float in YAML 1.2 and Python; YAML 1.1 (PyYAML) read it as a string."""
    path = tmp_path / "dice.yaml"
    path.write_text("name: dice\nsmooth: 1e-5\n")
    assert load_loss(path).smooth == 1e-5
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("lr: 2E-3\nweight_decay: 1e-4\n")
    assert experiment_from_dict(read_experiment(experiment)).train.lr == 0.002
    assert _key_value("lr=1e-5") == ("lr", 1e-5)


def test_a_deeply_nested_yaml_file_is_one_line_naming_file_line_and_limit(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("name: surrogate\ncurves: " + "[" * 1000 + "]" * 1000 + "\n")
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}, line 2" in err
    assert f"nested more than {MAX_YAML_DEPTH} levels deep" in err


def test_a_yaml_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, capsys,
                                                                        monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text("x: [" + ", ".join(["1"] * MAX_YAML_BYTES) + "]\n")
    monkeypatch.setattr(type(path), "read_text", lambda *a, **k: pytest.fail("read"))
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and f"more than the {MAX_YAML_BYTES}" in err


@pytest.mark.parametrize("argv, message", [
    (["--metric", ""], "--metric names no metric, but got ''"),
    (["--metric", " , "], "--metric names no metric"),
    (["--proxy", "size=0"], "proxy option size must be HxW (e.g. 96x128), a side S, or [H, W] "
                            "of positive ints, but got size=0"),
    (["--proxy", "crop=[0]"], "proxy option crop must be"),
])
def test_search_arguments_without_meaning_are_one_line(argv, message, capsys, tmp_path):
    code = cli.main(["search", "--data", "shapes?n=8&size=16", "--trials", "1", "--out",
                     str(tmp_path / "run"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_an_invalid_yaml_value_on_the_command_line_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["search", "--proxy", "metrics=[miou"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "argument --proxy: metrics '[miou', line 1: invalid YAML" in err


# ---- datasets: classes, image sizes and archives checked before allocating -------------------

@pytest.mark.parametrize("spec, message", [
    ("shapes?size=20000x20000", "an image of 20000x20000 pixels is more than the 16777216"),
    ("shapes?size=600", "shapes makes at most 262144 pixels per image"),
    ("shapes?n=100000000", "but got 100000000 images of 64x64"),
])
def test_a_dataset_spec_over_a_size_limit_is_one_line(spec, message, capsys):
    assert cli.main(["info", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and spec in err and message in err


def _npz_header_only(path, shapes):
    """An npz whose ``.npy`` headers claim ``shapes`` over a few KB of zeros (a zip bomb)."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, shape in shapes.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(
                    member, {"descr": "|u1", "fortran_order": False, "shape": shape})
                member.write(bytes(4096))


def test_a_zip_bomb_npz_is_refused_from_its_headers(tmp_path, capsys):
    root = tmp_path / "bomb"
    root.mkdir()
    _npz_header_only(root / "train.npz", {"images": (10**6, 256, 256, 3),
                                          "labels": (10**6, 256, 256)})
    assert (root / "train.npz").stat().st_size < 100_000
    assert cli.main(["info", f"npz:{root}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.npz unpacks to 262.1 GB, more than half" in err
    _npz_header_only(root / "train.npz", {"images": (1, 8192, 8192, 3), "labels": (1, 8192, 8192)})
    assert cli.main(["info", f"npz:{root}"]) == 2
    assert "array 'images' (1, 8192, 8192, 3): an image of 8192x8192" in capsys.readouterr().err


@pytest.mark.parametrize("labels_top, option", [(10**9, ""), (3, "?num_classes=5000")])
def test_a_billion_classes_is_refused_before_anything_per_class_is_made(tmp_path, capsys,
                                                                      labels_top, option):
    root = tmp_path / "npz"
    root.mkdir()
    labels = np.zeros((2, 4, 4), np.int64)
    labels[0, 0, 0] = labels_top
    np.savez(root / "train.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=labels)
    assert cli.main(["info", f"npz:{root}{option}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"more than the {MAX_CLASSES} a dataset may have" in err
    assert "train.npz" in err
    with pytest.raises(InvalidValueError, match=rf"num_classes must be an int in \[1, {MAX_CLASSES}"):
        MetricAccumulator(num_classes=10**9)


def test_image_files_that_cannot_be_decoded_are_named(tmp_path):
    from PIL import Image

    from autoloss.data import load_dataset

    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "images" / "a.png")
    Image.new("L", (32, 32)).save(tmp_path / "masks" / "a.png")
    data = (tmp_path / "images" / "a.png").read_bytes()
    (tmp_path / "images" / "a.png").write_bytes(data[: len(data) // 2])  # truncated
    dataset = load_dataset(f"folder:{tmp_path}", "train")
    with pytest.raises(InvalidValueError, match=r"cannot read image .*a\.png: image file is "
                                                r"truncated"):
        dataset[0]


def test_nan_pixels_are_a_data_error_not_a_learning_rate(tmp_path):
    from autoloss.data import load_dataset

    images = np.full((2, 4, 4, 3), 0.5, np.float32)
    images[1, 2, 2, 0] = np.nan
    np.savez(tmp_path / "train.npz", images=images, labels=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(InvalidValueError, match=r"train.npz: images hold 1 NaN or infinite"):
        load_dataset(f"npz:{tmp_path}", "train")


def test_an_empty_split_says_it_is_empty(tmp_path):
    from autoloss.data import load_dataset

    np.savez(tmp_path / "train.npz", images=np.zeros((2, 4, 4, 3), np.uint8),
             labels=np.zeros((2, 4, 4), np.uint8))
    np.savez(tmp_path / "val.npz", images=np.zeros((0, 4, 4, 3), np.uint8),
             labels=np.zeros((0, 4, 4), np.uint8))
    with pytest.raises(InvalidValueError, match=r"split 'val' of 'npz:.*' has no images"):
        load_dataset(f"npz:{tmp_path}", "val", subset=4)


# ---- damaged records -------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["export", "{dir}"], ["plot", "{dir}"],
                                  ["evaluate", "--checkpoint", "{dir}/checkpoint.pt"]])
def test_invalid_json_in_run_json_is_one_line_naming_the_file(argv, tmp_path, capsys):
    (tmp_path / "run.json").write_text('{"storage": "sqlite:///study.db", "study": ')
    (tmp_path / "study.db").write_bytes(b"")
    code = cli.main([a.format(dir=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / 'run.json'}, line 1 column 44: invalid JSON" in err


def test_invalid_json_in_a_runs_metrics_is_one_line_naming_the_file(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{")
    code = cli.main(["train", "--loss", "cross_entropy", "--data", "shapes?n=8&size=16",
                     "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'metrics.json'}, line 1 column 2: invalid JSON" in err
    assert "delete it to train this run again" in err


# ---- the machine's errors and crafted files name their file ----------------------------------

def test_a_full_disk_names_the_file_it_was_writing(tmp_path, monkeypatch, capsys):
    """``[Errno 28] No space left on device`` from a write names no file: autoloss names it; and
    torch's ``[enforce fail at inline_container.cc]`` for a checkpoint is that error too."""
    from autoloss.utils.atomic import write_text_atomic

    def full(tmp, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(tmp_path), "write_text", full)
    with pytest.raises(OSError) as err:
        write_text_atomic(tmp_path / "summary.md", "x")
    assert err.value.errno == 28 and err.value.filename == str(tmp_path / "summary.md")
    assert not list(tmp_path.iterdir())  # no temporary file left
    monkeypatch.undo()

    def torch_full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", torch_full)
    out = tmp_path / "run"
    code = cli.main(["train", "--loss", "cross_entropy", "--data", "shapes?n=8&size=16",
                     "--width", "4", "--depth", "2", "--steps", "2", "--eval-every", "2",
                     "--batch-size", "2", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "cannot write the checkpoint" in err and str(out / "checkpoint.pt") in err


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="2"), "checkpoint format must be an int, but got format='2'"),
    (lambda d: d["model_config"].update(num_classes=9), "model config and weights do not fit"),
    (lambda d: d["model_config"].update(width="wide"), "model config and weights do not fit"),
])
def test_a_checkpoint_with_crafted_metadata_is_one_line(edit, message, tmp_path, capsys):
    from autoloss.train.checkpoint import write_checkpoint
    from autoloss.train.models import UNetConfig, build_model, config_to_dict

    config = UNetConfig(num_classes=6, width=4, depth=2)
    payload = {"model": build_model(config).state_dict(), "model_config": config_to_dict(config)}
    edit(payload)
    write_checkpoint(tmp_path / "checkpoint.pt", payload)
    code = cli.main(["evaluate", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--data",
                     "shapes?n=8&size=16"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert str(tmp_path / "checkpoint.pt") in err


def test_an_empty_test_split_is_found_before_training(tmp_path, capsys, monkeypatch):
    import autoloss.retrain.runs as runs

    for split, n in (("train", 2), ("val", 2), ("test", 0)):
        np.savez(tmp_path / f"{split}.npz", images=np.zeros((n, 8, 8, 3), np.uint8),
                 labels=np.zeros((n, 8, 8), np.uint8), num_classes=np.array(2))
    monkeypatch.setattr(runs, "fit", lambda *a, **k: pytest.fail("trained"))
    code = cli.main(["train", "--loss", "cross_entropy", "--data", f"npz:{tmp_path}",
                     "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "split 'test' of 'npz:" in err
    assert "has no images" in err


def test_the_docs_list_each_limit_with_its_value():
    from pathlib import Path

    from autoloss.data.dataset import MAX_IMAGE_PIXELS
    from autoloss.data.embedded import SHAPES_MAX_IMAGE_PIXELS, SHAPES_MAX_PIXELS
    from autoloss.search.spaces import MAX_CURVE_PIECES

    errors = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
    for name, value, text in [
        ("MAX_YAML_BYTES", MAX_YAML_BYTES, "100 KB"), ("MAX_YAML_DEPTH", MAX_YAML_DEPTH, "32 levels"),
        ("MAX_TOL", MAX_TOL, "[0, 1024]"), ("MAX_CLASSES", MAX_CLASSES, "| 1024 |"),
        ("MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, "4096 x 4096"), ("MAX_OPTION", MAX_OPTION, "1e6"),
        ("SHAPES_MAX_", (SHAPES_MAX_IMAGE_PIXELS, SHAPES_MAX_PIXELS), "512 x 512 an image, 2^27"),
        ("MAX_CURVE_PIECES", MAX_CURVE_PIECES, "| 32 |"),
    ]:
        assert name in errors and text in errors, (name, value)
    assert (MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_TOL, MAX_CLASSES, MAX_OPTION, MAX_CURVE_PIECES) == (
        100_000, 32, 1024, 1024, 1e6, 32)
    assert (MAX_IMAGE_PIXELS, SHAPES_MAX_IMAGE_PIXELS, SHAPES_MAX_PIXELS) == (
        4096 * 4096, 512 * 512, 2**27)
    assert "| 130 |" in errors and "interrupted; run the same command to resume" in errors
