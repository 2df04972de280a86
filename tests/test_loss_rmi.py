"""RMI loss: golden parity (loss, gradient, RMI term), a naive reference for other options,
numerical safety (constant prediction, single class, extreme logits), options and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autoloss.losses.rmi import RMI_PRESETS, RMILoss, rmi_loss, rmi_lower_bound

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
RMI_FILES = sorted(GOLDEN.glob("rmi_*.npz")) if GOLDEN.is_dir() else []
_POOL = {0: "max", 1: "avg", 2: "resize"}


def from_reference_kwargs(cfg: dict) -> dict:
    """Translate reference ``RMILoss(**cfg)`` keyword arguments into ``rmi_loss`` options."""
    return {"radius": cfg["rmi_radius"], "pool": _POOL[cfg["rmi_pool_way"]],
            "pool_size": cfg["rmi_pool_size"], "pool_stride": cfg["rmi_pool_stride"],
            "weight_lambda": cfg["loss_weight_lambda"],
            "lambda_way": "convex" if cfg["lambda_way"] == 1 else "additive"}


def _golden_cases():
    for path in RMI_FILES:
        data = np.load(path)
        for key in data.files:
            if key.startswith("cfg_"):
                yield pytest.param(path, key[4:], id=f"{path.stem}-{key[4:]}")


@pytest.mark.parametrize(("path", "cfg"), list(_golden_cases()))
def test_golden(path: Path, cfg: str) -> None:
    data = np.load(path)
    options = from_reference_kwargs(json.loads(str(data[f"cfg_{cfg}"])))
    assert options == RMI_PRESETS[cfg]
    logits = torch.tensor(data["logits"], requires_grad=True)
    labels = torch.tensor(data["labels"])
    loss = rmi_loss(logits, labels, **options)
    loss.backward()
    assert loss.dtype == torch.float32 and str(data[f"loss_dtype_{cfg}"]) == "torch.float32"
    assert loss.item() == pytest.approx(float(data[f"loss_{cfg}"]), rel=1e-6)
    np.testing.assert_allclose(logits.grad.numpy(), data[f"grad_{cfg}"], rtol=0, atol=1e-9)
    # the RMI term alone, on the same masked one-hot labels and probabilities
    c = logits.shape[1]
    valid = (labels < c).unsqueeze(1)
    onehot = F.one_hot(labels.clamp(max=c - 1), c).permute(0, 3, 1, 2).double() * valid
    probs = torch.sigmoid(logits.detach()) * valid + 1e-6
    term = rmi_lower_bound(onehot, probs, radius=options["radius"], pool=options["pool"],
                           pool_size=options["pool_size"], pool_stride=options["pool_stride"])
    assert term.item() == pytest.approx(float(data[f"rmi_term_{cfg}"]), rel=1e-6)
    # explicit ignore_index gives the same result as the >= C rule
    if int(data["ignore_index"]) >= c:
        again = rmi_loss(logits.detach(), labels, ignore_index=int(data["ignore_index"]),
                         **options)
        assert again.item() == loss.item()


@pytest.mark.parametrize(("path", "cfg"), list(_golden_cases()))
def test_golden_float32_and_presets(path: Path, cfg: str) -> None:
    data = np.load(path)
    logits = torch.tensor(data["logits"], dtype=torch.float32, requires_grad=True)
    module = getattr(RMILoss, cfg)()
    loss = module(logits, torch.tensor(data["labels"]))
    loss.backward()
    ref_grad = data[f"grad_{cfg}"]
    assert loss.item() == pytest.approx(float(data[f"loss_{cfg}"]), rel=1e-5)
    np.testing.assert_allclose(logits.grad.numpy(), ref_grad, rtol=0,
                               atol=1e-5 * float(np.abs(ref_grad).max()))


# ---------------------------------------------------------------- naive reference
def _naive(logits, labels, *, radius, pool, pool_size, pool_stride, weight_lambda, lambda_way,
           ignore_index=None):
    n, c, h, w = logits.shape
    valid = labels < c
    if ignore_index is not None:
        valid = valid & (labels != ignore_index)
    q = torch.zeros_like(logits)
    for k in range(c):
        q[:, k] = ((labels == k) & valid).to(logits.dtype)
    v = valid.unsqueeze(1).to(logits.dtype)
    x = logits
    bce = -(q * F.logsigmoid(x) + (1 - q) * F.logsigmoid(-x)) * v
    bce = bce.sum() / (v.sum() + 1)
    p = torch.sigmoid(x) * v + 1e-6
    if pool_stride > 1:
        if pool == "max":
            q, p = (F.max_pool2d(t, pool_size, pool_stride, pool_size // 2) for t in (q, p))
        elif pool == "avg":
            q, p = (F.avg_pool2d(t, pool_size, pool_stride, pool_size // 2) for t in (q, p))
        else:
            size = (h // pool_stride, w // pool_stride)
            q = F.interpolate(q, size=size, mode="nearest")
            p = F.interpolate(p, size=size, mode="bilinear", align_corners=True)
    hh, ww = q.shape[2] - radius + 1, q.shape[3] - radius + 1
    d = radius * radius
    total = 0
    for k in range(c):
        per_image = []
        for b in range(n):
            ys = torch.stack([q[b, k, i:i + hh, j:j + ww].reshape(-1)
                              for i in range(radius) for j in range(radius)]).double()
            ps = torch.stack([p[b, k, i:i + hh, j:j + ww].reshape(-1)
                              for i in range(radius) for j in range(radius)]).double()
            ys, ps = ys - ys.mean(1, keepdim=True), ps - ps.mean(1, keepdim=True)
            eye = torch.eye(d, dtype=torch.float64)
            cov_yp = ys @ ps.T
            m = ys @ ys.T - cov_yp @ torch.linalg.inv(ps @ ps.T + 5e-4 * eye) @ cov_yp.T
            chol = torch.linalg.cholesky(m + 5e-4 * eye)
            per_image.append(torch.log(torch.diagonal(chol) + 1e-8).sum())
        total = total + torch.stack(per_image).mean() / d
    bce = bce.double()
    if lambda_way == "convex":
        return weight_lambda * bce + (1 - weight_lambda) * total
    return bce + weight_lambda * total


@pytest.mark.parametrize("options", [
    {"radius": 3, "pool": "resize", "pool_size": 3, "pool_stride": 2, "weight_lambda": 0.5,
     "lambda_way": "convex"},
    {"radius": 2, "pool": "avg", "pool_size": 3, "pool_stride": 2, "weight_lambda": 0.3,
     "lambda_way": "additive"},
    {"radius": 3, "pool": "max", "pool_size": 3, "pool_stride": 1, "weight_lambda": 0.7,
     "lambda_way": "convex"},
])
def test_matches_naive_reference(options) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 13, 11, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 13, 11), generator=gen)
    labels[torch.rand(2, 13, 11, generator=gen) < 0.1] = -1
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    loss = rmi_loss(x1, labels, ignore_index=-1, output_dtype="input", **options)
    ref = _naive(x2, labels, ignore_index=-1, **options)
    loss.backward()
    ref.backward()
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_constant_label_maps_are_skipped_and_match_naive_reference(monkeypatch, pool) -> None:
    """An (image, class) pair whose pooled labels are constant (class 1 absent from image 0,
    classes 0 and 1 from image 1, and with max pooling class 2, which fills image 1; average
    pooling counts the zero padding, so its border varies) gives the jitter's constant without
    being computed, and the loss and gradient still match the naive reference."""
    import autoloss.losses.rmi as rmi_module

    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 18, 18, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 18, 18), generator=gen)
    labels[0][labels[0] == 1] = 0
    labels[1] = 2
    computed = []

    def spy(q, p, radius):
        computed.append(q.shape[0])
        return real(q, p, radius)

    real = rmi_module._half_log_det
    monkeypatch.setattr(rmi_module, "_half_log_det", spy)
    options = {"radius": 3, "pool": pool, "pool_size": 2, "pool_stride": 2,
               "weight_lambda": 0.5, "lambda_way": "convex"}
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    loss = rmi_loss(x1, labels, output_dtype="input", **options)
    ref = _naive(x2, labels, **options)
    loss.backward()
    ref.backward()
    assert sum(computed) == (2 if pool == "max" else 3)  # of 6 (image, class) pairs
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-7, atol=1e-12)


# ---------------------------------------------------------------- numerical safety
@pytest.mark.parametrize("case", ["constant", "single_class", "extreme", "all_ignored"])
@pytest.mark.parametrize("preset", ["class_defaults", "train_defaults"])
def test_numerically_safe(case, preset) -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 20, 24, generator=gen)
    labels = torch.randint(0, 4, (2, 20, 24), generator=gen)
    if case == "constant":
        logits = torch.zeros_like(logits)
    elif case == "single_class":
        labels = torch.full_like(labels, 2)
    elif case == "extreme":
        logits = logits.sign() * 1e4
    else:
        labels = torch.full_like(labels, 255)
    logits.requires_grad_(True)
    loss = getattr(RMILoss, preset)()(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    if case == "all_ignored":  # a constant (the log det of the jitter), with zero gradient
        assert torch.count_nonzero(logits.grad) == 0


def test_gradcheck_float64(single_thread) -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 6, 7), generator=gen)  # label 2 >= C is ignored
    for pool in ("avg", "max"):
        assert torch.autograd.gradcheck(
            lambda x, pl=pool: rmi_loss(x, labels, radius=2, pool=pl, pool_size=2,
                                        pool_stride=2, output_dtype="input"), (logits,))
    # without pooling, radius 3 (fast mode: a random projection of the Jacobian)
    assert torch.autograd.gradcheck(
        lambda x: rmi_loss(x, labels, radius=3, pool_stride=1, output_dtype="input"), (logits,),
        fast_mode=True)


# ---------------------------------------------------------------- modules and errors
def test_module_round_trip_and_presets() -> None:
    module = RMILoss.train_defaults(ignore_index=-1)
    spec = module.to_dict()
    assert spec == {"name": "rmi", **RMI_PRESETS["train_defaults"], "ignore_index": -1,
                    "output_dtype": "float32"}
    assert RMILoss(**{k: v for k, v in spec.items() if k != "name"}).to_dict() == spec
    assert RMILoss().to_dict() == RMILoss.class_defaults().to_dict()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"radius": 0}, "radius"),
    ({"pool": "mean"}, "pool must be one of"),
    ({"pool_size": 2.5}, "pool_size"),
    ({"pool_stride": 0}, "pool_stride"),
    ({"weight_lambda": -0.1}, "weight_lambda"),
    ({"lambda_way": "convx"}, "did you mean 'convex'"),
    ({"output_dtype": "float64"}, "output_dtype"),
    ({"ignore_index": "255"}, "ignore_index"),
])
def test_bad_options(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        RMILoss(**kwargs)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="pooled size"):
        rmi_loss(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        rmi_loss(torch.randn(1, 2, 12, 12), torch.full((1, 12, 12), -3))
    with pytest.raises(TypeError, match="integer dtype"):
        rmi_loss(torch.randn(1, 2, 12, 12), torch.zeros(1, 12, 12))


def test_chunks_give_the_same_result(monkeypatch) -> None:
    import autoloss.losses.rmi as rmi_module

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 16, 15, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 16, 15), generator=gen)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    whole = rmi_loss(x1, labels, output_dtype="input")
    whole.backward()
    monkeypatch.setattr(rmi_module, "_CHUNK_ELEMENTS", 50)  # one (image, class) per chunk
    chunked = rmi_loss(x2, labels, output_dtype="input")
    chunked.backward()
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-14)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-16)
