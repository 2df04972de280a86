"""JDT losses (Jaccard Metric, Dice Semimetric, compatible Tversky): golden parity with the
reference, an independent brute-force reference for untested options, metric properties."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss.losses.jdt import (
    CompatibleTverskyLoss,
    DiceSemimetricLoss,
    JaccardMetricLoss,
    compatible_tversky_loss,
    dice_semimetric_loss,
    jaccard_metric_loss,
    jdt_loss,
)

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
JDT_FILES = sorted(GOLDEN.glob("jdt_*.npz")) if GOLDEN.is_dir() else []

_RENAME = {"mIoUD": "miou_d", "mIoUI": "miou_i", "mIoUC": "miou_c",
           "active_classes_mode_hard": "classes", "active_classes_mode_soft": "soft_classes"}


def from_reference_kwargs(cfg: dict) -> dict:
    """Translate reference ``JDTLoss(**cfg)`` keyword arguments into ``jdt_loss`` options."""
    out = {}
    for key, value in cfg.items():
        name = _RENAME.get(key, key)
        if name in ("classes", "soft_classes"):
            value = value.lower()
        out[name] = value
    return out


def _golden_cases():
    for path in JDT_FILES:
        data = np.load(path)
        for key in data.files:
            if key.startswith("cfg_"):
                yield pytest.param(path, key[4:], id=f"{path.stem}-{key[4:]}")


def _target(data) -> torch.Tensor:
    if "soft_labels" in data.files:
        return torch.tensor(data["soft_labels"])
    return torch.tensor(data["labels"])


@pytest.mark.parametrize(("path", "cfg"), list(_golden_cases()))
def test_golden_float64(path: Path, cfg: str) -> None:
    data = np.load(path)
    options = from_reference_kwargs(json.loads(str(data[f"cfg_{cfg}"])))
    logits = torch.tensor(data["logits"], requires_grad=True)
    loss = jdt_loss(logits, _target(data), **options)
    loss.backward()
    assert loss.item() == pytest.approx(float(data[f"loss_{cfg}"]), rel=1e-12, abs=0)
    np.testing.assert_allclose(logits.grad.numpy(), data[f"grad_{cfg}"], rtol=0, atol=1e-14)


@pytest.mark.parametrize(("path", "cfg"), list(_golden_cases()))
def test_golden_float32(path: Path, cfg: str) -> None:
    data = np.load(path)
    options = from_reference_kwargs(json.loads(str(data[f"cfg_{cfg}"])))
    logits = torch.tensor(data["logits"], dtype=torch.float32, requires_grad=True)
    target = _target(data)
    loss = jdt_loss(logits, target.float() if target.is_floating_point() else target, **options)
    loss.backward()
    ref_grad = data[f"grad_{cfg}"]
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(float(data[f"loss_{cfg}"]), rel=1e-5)
    np.testing.assert_allclose(logits.grad.numpy(), ref_grad, rtol=0,
                               atol=2e-4 * float(np.abs(ref_grad).max()))


@pytest.mark.skipif(not JDT_FILES, reason="golden files not available")
def test_front_ends_equal_core() -> None:
    data = np.load(GOLDEN / "jdt_hard_B2_C12_H12_W16_ign11.npz")
    logits, labels = torch.tensor(data["logits"]), torch.tensor(data["labels"])
    assert jaccard_metric_loss(logits, labels, ignore_index=11).item() == pytest.approx(
        float(data["loss_jaccard_default"]), rel=1e-12)
    assert dice_semimetric_loss(logits, labels, ignore_index=11).item() == pytest.approx(
        float(data["loss_dice"]), rel=1e-12)
    tversky = compatible_tversky_loss(logits, labels, alpha=0.3, beta=0.7, gamma=2.0,
                                      smooth=1.0, ignore_index=11)
    assert tversky.item() == pytest.approx(float(data["loss_tversky_a03_b07_gamma2"]), rel=1e-12)
    module = CompatibleTverskyLoss(alpha=0.3, beta=0.7, gamma=2.0, smooth=1.0, ignore_index=11)
    assert module(logits, labels).item() == tversky.item()


# ---------------------------------------------------------------- brute-force reference
def _brute(logits, target, *, alpha=1.0, beta=1.0, gamma=1.0, miou_d=1.0, miou_i=0.0,
           miou_c=0.0, smooth=1e-3, threshold=0.01, norm=1, log_loss=False, ignore_index=None,
           class_weights=None, classes="present", soft_classes="all"):
    """Loops over images and classes with explicit one-hot labels and min/max counts."""
    n, c = logits.shape[:2]
    p = torch.softmax(logits, dim=1)
    if target.is_floating_point():
        q, keep, select = target, torch.ones_like(p[:, 0]), soft_classes
    else:
        keep = (torch.ones_like(p[:, 0]) if ignore_index is None
                else (target != ignore_index).to(p.dtype))
        q = torch.nn.functional.one_hot(target.clamp(0, c - 1), c).permute(0, 3, 1, 2).to(p.dtype)
        select = classes
    p, q = p * keep[:, None], q * keep[:, None]

    def counts(pb, qb):
        tp = (pb.abs() ** norm).sum() + (qb.abs() ** norm).sum() - ((pb - qb).abs() ** norm).sum()
        tp = tp / 2
        return tp, (pb.abs() ** norm).sum() - tp, (qb.abs() ** norm).sum() - tp

    def entry(tp, fp, fn, k):
        t = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
        value = -torch.log(t) if log_loss else 1 - t
        value = value ** gamma
        return value * (1.0 if class_weights is None else class_weights[k])

    def active(peak, k):
        if select == "all":
            return True
        if select == "present":
            return bool(peak > threshold)
        return k in select

    total = logits.sum() * 0
    if miou_d > 0:
        vals = []
        for k in range(c):
            parts = [counts(p[b, k], q[b, k]) for b in range(n)]
            tp, fp, fn = (sum(x[i] for x in parts) for i in range(3))
            if active(q[:, k].max(), k):
                vals.append(entry(tp, fp, fn, k))
        if vals:
            total = total + miou_d * torch.stack(vals).mean()
    table = {(b, k): entry(*counts(p[b, k], q[b, k]), k) for b in range(n) for k in range(c)
             if active(q[b, k].max(), k)}
    if miou_i > 0:
        rows = [torch.stack([v for (b, _), v in table.items() if b == i]).mean()
                for i in range(n) if any(b == i for b, _ in table)]
        if rows:
            total = total + miou_i * torch.stack(rows).mean()
    if miou_c > 0:
        cols = [torch.stack([v for (_, k), v in table.items() if k == j]).mean()
                for j in range(c) if any(k == j for _, k in table)]
        if cols:
            total = total + miou_c * torch.stack(cols).mean()
    return total


def _hard_case(seed=0, n=3, c=4, h=6, w=5, ignore=None):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, c, (n, h, w), generator=gen)
    labels[0][labels[0] == 2] = 0  # class 2 absent from image 0
    if ignore is not None:
        labels[torch.rand(n, h, w, generator=gen) < 0.2] = ignore
    return logits, labels


def _soft_case(seed=0, n=2, c=4, h=5, w=5):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    soft = torch.softmax(3 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64), 1)
    return logits, soft


OPTION_SETS = [
    {},
    {"alpha": 0.5, "beta": 0.5, "miou_d": 0.3, "miou_i": 0.3, "miou_c": 0.4},
    {"norm": 2, "smooth": 1.0, "miou_i": 1.0},
    {"class_weights": [1.0, 2.0, 0.5, 0.0], "gamma": 2.0, "miou_c": 1.0, "classes": "all"},
    {"log_loss": True, "classes": [0, 2], "soft_classes": [1, 2], "miou_i": 0.5},
    {"alpha": 0.2, "beta": 0.9, "gamma": 3.0, "threshold": 0.3, "soft_classes": "present"},
]


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("kind", ["hard", "hard_ignore", "soft"])
def test_matches_brute_force(options, kind) -> None:
    if kind == "soft":
        logits, target = _soft_case(seed=1)
    else:
        logits, target = _hard_case(seed=1, ignore=3 if kind == "hard_ignore" else None)
        options = {**options, "ignore_index": 3 if kind == "hard_ignore" else None}
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    loss = jdt_loss(x1, target, **options)
    ref = _brute(x2, target, **options)
    loss.backward()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12, abs=1e-15)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- properties
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("options", [{}, {"alpha": 0.5, "beta": 0.5, "miou_i": 1.0},
                                     {"alpha": 0.3, "beta": 0.7, "miou_c": 1.0, "norm": 2}])
def test_zero_exactly_at_the_label_distribution(seed, options) -> None:
    """Metric property on soft labels: loss(log y) = 0, and > 0 for any other prediction."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.distributions.Dirichlet(torch.full((4,), 0.7)).sample((2, 5, 6)).permute(0, 3, 1, 2)
    y = (y.double() + 1e-6) / (y.double() + 1e-6).sum(1, keepdim=True)
    assert jdt_loss(torch.log(y), y, **options).item() < 1e-12
    other = torch.log(y) + 0.3 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    assert jdt_loss(other, y, **options).item() > 1e-6


def test_hard_labels_equal_their_one_hot_soft_labels() -> None:
    logits, labels = _hard_case(seed=7)
    soft = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).double()
    for options in ({"classes": "all", "soft_classes": "all"},
                    {"classes": "present", "soft_classes": "present", "miou_i": 1.0}):
        assert jdt_loss(logits, labels, **options).item() == pytest.approx(
            jdt_loss(logits, soft, **options).item(), rel=1e-13)


def test_ignored_pixels_do_not_matter() -> None:
    logits, labels = _hard_case(seed=8, ignore=255)
    mask = (labels == 255).unsqueeze(1).expand_as(logits)
    other = torch.where(mask, logits + 5.0, logits)
    assert jdt_loss(other, labels, ignore_index=255).item() == pytest.approx(
        jdt_loss(logits, labels, ignore_index=255).item(), rel=1e-14)


def test_all_ignored_and_extreme_logits() -> None:
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.full((2, 4, 4), 255)
    loss = jaccard_metric_loss(logits, labels, ignore_index=255, miou_i=1.0, miou_c=1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0
    extreme = (torch.randn(2, 3, 4, 4).sign() * 1e4).requires_grad_(True)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)  # single-class batch
    dice_semimetric_loss(extreme, labels, log_loss=True, classes="all", miou_i=1.0).backward()
    assert torch.isfinite(extreme.grad).all()


def test_gradcheck_float64(single_thread) -> None:
    logits, labels = _hard_case(seed=9, n=2, c=3, h=3, w=4, ignore=255)
    _, soft = _soft_case(seed=9, n=2, c=3, h=3, w=4)
    x = logits.clone().requires_grad_(True)
    for target, opts in ((labels, {"ignore_index": 255, "miou_i": 0.5, "miou_c": 0.5}),
                         (soft, {"log_loss": True, "gamma": 2.0, "norm": 2})):
        assert torch.autograd.gradcheck(lambda z, t=target, o=opts: jdt_loss(z, t, **o), (x,))


# ---------------------------------------------------------------- modules and errors
@pytest.mark.parametrize("cls", [JaccardMetricLoss, DiceSemimetricLoss, CompatibleTverskyLoss])
def test_module_round_trip(cls) -> None:
    module = cls(miou_i=0.5, class_weights=[1.0, 2.0, 3.0], classes=[0, 2], ignore_index=255)
    spec = module.to_dict()
    assert spec["name"] == cls.name
    rebuilt = cls(**{k: v for k, v in spec.items() if k != "name"})
    assert rebuilt.to_dict() == spec
    logits, labels = _hard_case(seed=10, c=3, ignore=255)
    assert module(logits, labels).item() == rebuilt(logits, labels).item()
    assert module.class_weights.dtype == torch.float32  # a buffer, moved by .to()
    assert "class_weights" in dict(module.named_buffers())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"gamma": 0.5}, "gamma must be >= 1"),
    ({"smooth": 0.0}, "smooth must be > 0"),
    ({"miou_d": 0.0}, "at least one of miou_d"),
    ({"miou_i": -1.0}, "miou_i"),
    ({"norm": 1.5}, "norm must be an int"),
    ({"threshold": 2.0}, "threshold"),
    ({"log_loss": 1}, "log_loss"),
    ({"classes": "PRESENT"}, "did you mean 'present'"),
    ({"soft_classes": "al"}, "soft_classes"),
    ({"class_weights": [1.0, -1.0]}, "class_weights"),
])
def test_bad_options(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        JaccardMetricLoss(**kwargs)


def test_bad_inputs() -> None:
    logits = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="class_weights must have one weight per class"):
        jdt_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long), class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="sum to 1"):
        jdt_loss(logits, torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="outside"):
        jdt_loss(logits, torch.full((1, 4, 4), 255))
