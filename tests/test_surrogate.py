"""SurrogateLoss: golden parity with Auto Seg-Loss, edge cases, presets, load/save."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss.core.metrics import evaluate
from autoloss.core.programs import BUILTIN_PROGRAMS
from autoloss.losses import SurrogateLoss, load_loss, save_loss

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
SURROGATE_FILES = sorted(GOLDEN.glob("asl_surrogate_*.npz")) if GOLDEN.is_dir() else []
CASE_NAMES = ["miou", "fwiou", "macc", "gacc", "biou", "biou_tol2", "biou_tol0", "bf1", "bf1_tol2",
              "bf1_dropbg"]
METRIC_OF = {"mIoU": "miou", "FWIoU": "fwiou", "mAcc": "macc", "gAcc": "gacc", "BIoU": "biou",
             "BF1": "bf1"}


def _golden_cases():
    for path in SURROGATE_FILES:
        for case in CASE_NAMES:
            yield pytest.param(path, case, id=f"{path.stem}-{case}")


@pytest.mark.parametrize(("path", "case"), list(_golden_cases()))
def test_preset_matches_reference(path: Path, case: str) -> None:
    data = np.load(path)
    cfg = json.loads(str(data[f"cfg_{case}"]))
    ignore = int(data["ignore_index"])
    logits = torch.tensor(data["logits"], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(data["labels"])
    metric = METRIC_OF[cfg["target_metric"]]
    loss_fn = load_loss(f"asl-voc-{metric}", ignore_index=None if ignore < 0 else ignore,
                        tol=cfg["tol"], drop_bg=cfg["drop_bg"])
    loss = loss_fn(logits, labels)
    loss.backward()
    ref_loss = float(data[f"loss_{case}"])
    ref_grad = data[f"grad_{case}"]
    if metric == "bf1":
        assert abs(float(loss.detach()) - ref_loss) <= 1e-7
        np.testing.assert_allclose(logits.grad.numpy(), ref_grad, rtol=0, atol=1e-9)
    else:
        assert float(loss.detach()) == pytest.approx(ref_loss, rel=1e-12, abs=0)
        np.testing.assert_allclose(logits.grad.numpy(), ref_grad, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("path", "case"), list(_golden_cases()))
def test_preset_float32_close_to_reference(path: Path, case: str) -> None:
    data = np.load(path)
    cfg = json.loads(str(data[f"cfg_{case}"]))
    ignore = int(data["ignore_index"])
    logits = torch.tensor(data["logits"], dtype=torch.float32)
    metric = METRIC_OF[cfg["target_metric"]]
    loss_fn = load_loss(f"asl-voc-{metric}", ignore_index=None if ignore < 0 else ignore,
                        tol=cfg["tol"], drop_bg=cfg["drop_bg"])
    loss = loss_fn(logits, torch.tensor(data["labels"]))
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(data[f"loss_{case}"]), rel=1e-5)


@pytest.mark.parametrize("metric", sorted(BUILTIN_PROGRAMS))
def test_one_hot_logits_give_the_exact_metric(metric: str) -> None:
    """With identity curves and near-one-hot probabilities the surrogate is the exact metric
    (on a batch where every class is present, so both average over the same classes)."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 6, 6), generator=gen).repeat_interleave(3, 1)
    labels = labels.repeat_interleave(3, 2)
    pred = labels.clone()
    pred[:, :4, :5] = (pred[:, :4, :5] + 1) % 3
    logits = 200.0 * torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).double()
    loss = SurrogateLoss(metric, tol=1)(logits, labels)
    exact = evaluate(pred, labels, num_classes=3, tol=1, metrics=[metric])[metric]
    assert 1 - float(loss) == pytest.approx(exact, abs=1e-7)


@pytest.mark.parametrize("metric", sorted(BUILTIN_PROGRAMS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_values_and_gradients_on_hard_inputs(metric: str, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    cases = {
        "extreme": (1e4 * torch.randn(2, 4, 10, 10, generator=gen),
                    torch.randint(0, 4, (2, 10, 10), generator=gen)),
        "all_ignore": (torch.randn(2, 4, 10, 10, generator=gen),
                       torch.full((2, 10, 10), 255)),
        "absent_classes": (torch.randn(2, 4, 10, 10, generator=gen),
                           torch.zeros(2, 10, 10, dtype=torch.long)),
        "single_class": (torch.randn(2, 1, 10, 10, generator=gen),
                         torch.zeros(2, 10, 10, dtype=torch.long)),
    }
    for name, (logits, target) in cases.items():
        for classes in ("present", "all"):
            x = logits.to(dtype).clone().requires_grad_(True)
            loss = SurrogateLoss(metric, ignore_index=255, classes=classes)(x, target)
            loss.backward()
            assert torch.isfinite(loss), (name, classes)
            assert torch.isfinite(x.grad).all(), (name, classes)
            assert loss.dtype == dtype


def test_all_ignore_batch_gives_zero() -> None:
    logits = torch.randn(1, 3, 5, 5, requires_grad=True)
    loss = SurrogateLoss("miou", ignore_index=255)(logits, torch.full((1, 5, 5), 255))
    loss.backward()
    assert float(loss) == 0.0
    assert float(logits.grad.abs().max()) == 0.0


def test_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 3, 6, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.randint(0, 3, (1, 6, 6), generator=gen)
    for preset in ("asl-voc-miou", "asl-voc-macc"):
        loss_fn = load_loss(preset, ignore_index=None)
        assert torch.autograd.gradcheck(lambda x, f=loss_fn: f(x, target), (logits,))


def test_soft_labels_equal_hard_labels_when_one_hot() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=gen)
    target = torch.randint(0, 4, (2, 8, 8), generator=gen)
    soft = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).double()
    for preset in ("asl-voc-miou", "asl-voc-bf1", "soft-biou"):
        loss_fn = load_loss(preset, ignore_index=None)
        assert float(loss_fn(logits, soft)) == pytest.approx(float(loss_fn(logits, target)),
                                                             abs=1e-12)


def test_save_load_round_trip(tmp_path: Path) -> None:
    for preset in ("asl-voc-miou", "asl-voc-bf1", "soft-mdice"):
        loss = load_loss(preset)
        path = save_loss(loss, tmp_path / f"{preset}.yaml", provenance={"note": "test"})
        again = load_loss(path)
        assert again.to_dict() == loss.to_dict()
        assert again.provenance == {"note": "test"}
        logits = torch.randn(2, 3, 8, 8, dtype=torch.float64)
        target = torch.randint(0, 3, (2, 8, 8))
        assert float(again(logits, target)) == float(loss(logits, target))


def test_overrides_and_errors() -> None:
    assert load_loss("asl-voc-biou", ignore_index=255, tol=2).tol == 2
    with pytest.raises(ValueError, match="did you mean 'tol'"):
        load_loss("asl-voc-biou", tool=2)
    with pytest.raises(ValueError, match="did you mean 'asl-voc-miou'"):
        load_loss("asl-voc-mio")
    with pytest.raises(ValueError, match="unknown metric 'miuo'.*did you mean 'miou'"):
        load_loss({"name": "surrogate", "metric": "miuo"})
    with pytest.raises(ValueError, match=r"curves \['bogus'\] are not used"):
        load_loss({"name": "surrogate", "metric": "miou", "curves": {"bogus": {"kind": "identity"}}})
    with pytest.raises(ValueError, match="classes"):
        SurrogateLoss("miou", classes="some")
    loss = SurrogateLoss("miou")
    with pytest.raises(ValueError, match="shape"):
        loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 5, 4, dtype=torch.long))


def test_malformed_yaml_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: surrogate\nmetric: [miou\n")
    with pytest.raises(ValueError, match=r"bad.yaml, line 3: invalid YAML"):
        load_loss(bad)
    with pytest.raises(FileNotFoundError):
        load_loss(tmp_path / "missing.yaml")
