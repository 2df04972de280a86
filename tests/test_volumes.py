"""3-D volumes: logits [N,C,D,H,W] and labels [N,D,H,W] in the losses, the exact metrics,
``evaluate`` and ``MetricAccumulator``. A volume of one slice is the 2-D image; a region loss of
a volume is the region loss of its slices stacked as one image; boundary metrics match a
brute-force 3-D reference written here; a loss that cannot take volumes says so."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_cases import all_names, build, inputs

from autoloss import MetricAccumulator, evaluate
from autoloss.errors import InvalidValueError
from autoloss.losses import load_loss

#: losses without volumes (their error names them): binary losses (one logit [N,1,H,W] would
#: be ambiguous with a volume's label map) and RMI (2-D neighbourhoods)
NO_VOLUMES = {"lovasz_hinge", "binary_cross_entropy", "paddleseg-lovasz-hinge-bce", "rmi",
              "rmi-train"}
BOUNDARY = ("biou", "bf1")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("volumes")


def _volume(name: str, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [2,3,D,12,16] and labels [2,D,12,16] (blocky, some ignored)."""
    logits, labels = inputs(name, (2 * d, 3, 12, 16), seed=seed, dtype=torch.float64,
                            ignored=0.05, block=3)
    n, c = 2, logits.shape[1]
    return (logits.reshape(n, d, c, 12, 16).transpose(1, 2).contiguous(),
            labels.reshape(n, d, 12, 16).contiguous())


def _loss_and_grad(loss, logits, labels):
    x = logits.detach().clone().requires_grad_(True)
    value = loss(x, labels)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("name", all_names())
def test_one_slice_volume_is_the_image(name, folder) -> None:
    logits, labels = _volume(name, 1)
    loss = build(name, folder, **({"tol": 2} if "surrogate" == name else {}))
    if name in NO_VOLUMES:
        with pytest.raises(InvalidValueError, match="3-D volumes"):
            loss(logits, labels)
        return
    value, grad = _loss_and_grad(loss, logits, labels)
    ref, ref_grad = _loss_and_grad(loss, logits[:, :, 0], labels[:, 0])
    torch.testing.assert_close(value, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad[:, :, 0], ref_grad, rtol=1e-10, atol=1e-12)


def _is_region(name: str) -> bool:
    return name not in NO_VOLUMES and not any(b in name for b in BOUNDARY)


@pytest.mark.parametrize("name", [n for n in all_names() if _is_region(n)])
def test_region_loss_of_a_volume_is_that_of_its_stacked_slices(name, folder) -> None:
    logits, labels = _volume(name, 4)
    n, c, d, h, w = logits.shape
    loss = build(name, folder)
    value, grad = _loss_and_grad(loss, logits, labels)
    stacked, stacked_grad = _loss_and_grad(loss, logits.reshape(n, c, d * h, w),
                                           labels.reshape(n, d * h, w))
    torch.testing.assert_close(value, stacked, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad.reshape(n, c, d * h, w), stacked_grad, rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("spec", [{"name": "dice", "per_image": True},
                                  {"name": "jaccard_metric", "miou_i": 0.5, "miou_c": 0.5},
                                  {"name": "lovasz_softmax", "per_image": True},
                                  {"name": "dice", "mode": "binary", "classes": [1]}])
def test_per_volume_options(spec) -> None:
    logits, labels = _volume("dice", 3)
    n, c, d, h, w = logits.shape
    if spec.get("mode") == "binary":
        logits, labels = logits[:, 1:2], labels.clamp(0, 1)
        c = 1
    loss = load_loss(spec, ignore_index=255)
    torch.testing.assert_close(loss(logits, labels),
                               loss(logits.reshape(n, c, d * h, w), labels.reshape(n, d * h, w)))


def test_resize_volumes_is_trilinear() -> None:
    logits, labels = _volume("dice", 4)
    small = logits[:, :, ::2, ::2, ::2]
    up = F.interpolate(small, size=labels.shape[1:], mode="trilinear", align_corners=False)
    torch.testing.assert_close(load_loss("dice", resize="bilinear", ignore_index=255)(small, labels),
                               load_loss("dice", ignore_index=255)(up, labels))
    with pytest.raises(InvalidValueError, match="2x the logits' size.*resize='bilinear'"):
        load_loss("dice", ignore_index=255)(small, labels)


# ------------------------------------------------------------- exact metrics: brute force 3-D
def _edges(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask [D,H,W]`` with an in-volume 26-neighbour outside it."""
    d, h, w = mask.shape
    out = np.zeros_like(mask)
    for z, y, x in itertools.product(range(d), range(h), range(w)):
        if not mask[z, y, x]:
            continue
        for dz, dy, dx in itertools.product((-1, 0, 1), repeat=3):
            zz, yy, xx = z + dz, y + dy, x + dx
            if 0 <= zz < d and 0 <= yy < h and 0 <= xx < w and not mask[zz, yy, xx]:
                out[z, y, x] = True
                break
    return out


def _dilate(mask: np.ndarray, tol: int) -> np.ndarray:
    """Voxels within Chebyshev distance ``tol`` of ``mask [D,H,W]``."""
    out = np.zeros_like(mask)
    for z, y, x in zip(*np.nonzero(mask)):
        out[max(z - tol, 0):z + tol + 1, max(y - tol, 0):y + tol + 1,
            max(x - tol, 0):x + tol + 1] = True
    return out


def _reference(pred: np.ndarray, gt: np.ndarray, num_classes: int, tol: int) -> dict[str, float]:
    """BF1 and BIoU of label volumes ``[N,D,H,W]`` (no ignored voxels), summed over the batch."""
    n_gt, n_pred, m_pred, m_gt = (np.zeros(num_classes) for _ in range(4))
    inter, union, gt_count, pred_count = (np.zeros(num_classes) for _ in range(4))
    for p, g in zip(pred, gt):
        band = np.zeros(g.shape, bool)
        for c in range(num_classes):
            band |= _edges(g == c)
        band = _dilate(band, tol)
        for c in range(num_classes):
            ge, pe = _edges(g == c), _edges(p == c)
            n_gt[c] += ge.sum()
            n_pred[c] += pe.sum()
            m_pred[c] += (pe & _dilate(ge, tol)).sum()
            m_gt[c] += (ge & _dilate(pe, tol)).sum()
            inter[c] += ((p == c) & (g == c) & band).sum()
            union[c] += (((p == c) | (g == c)) & band).sum()
            gt_count[c] += ((g == c) & band).sum()
            pred_count[c] += ((p == c) & band).sum()
    f1 = []
    for c in range(num_classes):
        if n_gt[c] == 0:
            continue
        precision = m_pred[c] / n_pred[c] if n_pred[c] else 0.0
        recall = m_gt[c] / n_gt[c]
        f1.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    present = (gt_count > 0) | (pred_count > 0)
    biou = np.mean([inter[c] / union[c] for c in range(num_classes) if present[c]])
    return {"bf1": float(np.mean(f1)), "biou": float(biou)}


@pytest.mark.parametrize("tol", [1, 2])
def test_boundary_metrics_of_volumes_match_brute_force(tol) -> None:
    gen = torch.Generator().manual_seed(3)
    coarse = torch.randint(0, 3, (2, 2, 3, 3), generator=gen)  # blocks with interiors
    gt = coarse.repeat_interleave(3, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
    pred = gt.clone()
    flip = torch.rand(gt.shape, generator=gen) < 0.15
    pred[flip] = torch.randint(0, 3, (int(flip.sum()),), generator=gen)
    ref = _reference(pred.numpy(), gt.numpy(), 3, tol)
    found = evaluate(pred, gt, num_classes=3, tol=tol, metrics=["bf1", "biou"])
    n, d, h, w = gt.shape  # (not the metrics of the slices as 2-D images)
    slices = evaluate(pred.reshape(n * d, h, w), gt.reshape(n * d, h, w), num_classes=3,
                      tol=tol, metrics=["bf1", "biou"])
    assert abs(slices["bf1"] - ref["bf1"]) > 1e-3 and abs(slices["biou"] - ref["biou"]) > 1e-3
    assert found["bf1"] == pytest.approx(ref["bf1"], abs=1e-12)
    assert found["biou"] == pytest.approx(ref["biou"], abs=1e-12)


def test_metrics_of_volumes() -> None:
    logits, labels = _volume("dice", 3)
    labels = labels.clamp(0, 2)
    pred = logits.argmax(1)
    acc = MetricAccumulator(num_classes=3)
    acc.update(logits, labels)  # scores [N,C,D,H,W]
    assert acc.compute() == evaluate(pred, labels, num_classes=3)
    # one slice: the 2-D metrics
    assert evaluate(pred[:, :1], labels[:, :1], num_classes=3) == \
        evaluate(pred[:, 0], labels[:, 0], num_classes=3)
    # region metrics of a volume: those of the stacked slices
    n, d, h, w = labels.shape
    region = ["miou", "fwiou", "macc", "gacc", "mdice"]
    assert evaluate(pred, labels, num_classes=3, metrics=region) == \
        evaluate(pred.reshape(n, d * h, w), labels.reshape(n, d * h, w), num_classes=3,
                 metrics=region)
    with pytest.raises(ValueError, match=r"\[N,C,D,H,W\]"):
        acc.update(logits[:, :2], labels)


def test_soft_boundary_surrogate_of_a_volume_is_the_exact_metric_at_one_hot() -> None:
    """The relaxed program with 3-D kernels equals the exact 3-D metric on one-hot predictions."""
    gen = torch.Generator().manual_seed(5)
    coarse = torch.randint(0, 3, (2, 2, 3, 3), generator=gen)
    gt = coarse.repeat_interleave(3, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
    pred = torch.where(torch.rand(gt.shape, generator=gen) < 0.1, (gt + 1) % 3, gt)
    logits = 60.0 * F.one_hot(pred, 3).permute(0, 4, 1, 2, 3).double()
    exact = evaluate(pred, gt, num_classes=3, tol=1, metrics=["bf1"])["bf1"]
    soft = load_loss("soft-bf1", tol=1)(logits, gt)
    assert float(1.0 - soft) == pytest.approx(exact, abs=1e-7)  # eps=1e-8 in the ratios
