"""Exact metrics (autoloss.core.metrics) against the golden reference vectors and against an
independent brute-force numpy reference written here (loops, no autoloss internals)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoloss.core.metrics import METRIC_NAMES, MetricAccumulator, evaluate, evaluate_per_class

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
PER_CLASS = ("miou", "macc", "mdice", "biou", "bf1")


# ----------------------------------------------------------------- brute-force reference
NEIGHBOURS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]


def ref_edges(labels: np.ndarray, member: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C,H,W]``: pixel of class c (and ``member``) with an in-image 8-neighbour that is not
    (``member`` and of class c)."""
    h, w = labels.shape
    edges = np.zeros((num_classes, h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            if not member[i, j]:
                continue
            c = labels[i, j]
            for di, dj in NEIGHBOURS:
                a, b = i + di, j + dj
                if 0 <= a < h and 0 <= b < w and not (member[a, b] and labels[a, b] == c):
                    edges[c, i, j] = True
                    break
    return edges


def ref_dilate(edges: np.ndarray, tol: int) -> np.ndarray:
    """Pixels at Chebyshev distance <= tol (inside the image) of a True pixel, per class."""
    out = np.zeros_like(edges)
    for c, i, j in zip(*np.nonzero(edges)):
        out[c, max(0, i - tol):i + tol + 1, max(0, j - tol):j + tol + 1] = True
    return out


def ref_confusion(pred: np.ndarray, gt: np.ndarray, keep: np.ndarray, num_classes: int):
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows gt, columns pred
    for g, p in zip(gt[keep].tolist(), pred[keep].tolist()):
        cm[g, p] += 1
    return cm


def div(a: float, b: float) -> float:
    return a / b if b else math.nan


def nanmean(values) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def ref_per_class(cm: np.ndarray) -> dict[str, list[float]]:
    inter, gt, pred = np.diag(cm), cm.sum(1), cm.sum(0)
    union = gt + pred - inter
    c = range(len(inter))
    return {
        "miou": [div(inter[k], union[k]) for k in c],
        "macc": [div(inter[k], gt[k]) for k in c],
        "mdice": [div(2 * inter[k], gt[k] + pred[k]) for k in c],
    }


def reference(pred, gt, *, num_classes, ignore_index, tol, drop_bg):
    """Every metric of autoloss.core.metrics, by brute force. Returns (means, per-class lists)."""
    C = num_classes
    valid = np.ones(gt.shape, bool) if ignore_index is None else gt != ignore_index
    cm = ref_confusion(pred, gt, valid, C)
    per = ref_per_class(cm)
    total = cm.sum()
    out = {name: nanmean(per[name]) for name in ("miou", "macc", "mdice")}
    out["gacc"] = div(np.trace(cm), total)
    out["fwiou"] = (math.nan if total == 0 else
                    sum(cm[k].sum() / total * per["miou"][k] for k in range(C) if cm[k].sum()))
    images = []
    band = np.zeros(gt.shape, bool)
    n_pred, n_gt, match_pred, match_gt = (np.zeros(C) for _ in range(4))
    for n in range(gt.shape[0]):
        if valid[n].any():
            images.append(nanmean(ref_per_class(ref_confusion(pred[n], gt[n], valid[n], C))["miou"]))
        e_gt = ref_edges(np.where(valid[n], gt[n], 0), valid[n], C)
        e_pred = ref_edges(pred[n], np.ones(gt[n].shape, bool), C)
        d_gt, d_pred = ref_dilate(e_gt, tol), ref_dilate(e_pred, tol)
        band[n] = d_gt[1:].any(0) if drop_bg else d_gt.any(0)
        n_pred += e_pred.sum((1, 2))
        n_gt += e_gt.sum((1, 2))
        match_pred += (e_pred & d_gt).sum((1, 2))
        match_gt += (d_pred & e_gt).sum((1, 2))
    out["miou_image"] = nanmean(images)
    per["biou"] = ref_per_class(ref_confusion(pred, gt, valid & band, C))["miou"]
    out["biou"] = nanmean(per["biou"])
    per["bf1"] = []
    for k in range(C):
        if n_gt[k] == 0 or (drop_bg and k == 0):
            per["bf1"].append(math.nan)
            continue
        p = match_pred[k] / n_pred[k] if n_pred[k] else 0.0
        r = match_gt[k] / n_gt[k]
        per["bf1"].append(2 * p * r / (p + r) if p + r else 0.0)
    out["bf1"] = nanmean(per["bf1"])
    return out, per


def assert_close(ours, ref, *, tol: float, what: str) -> None:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    nan_ours, nan_ref = np.isnan(ours), np.isnan(ref)
    assert np.array_equal(nan_ours, nan_ref), f"{what}: NaN at {nan_ours} vs reference {nan_ref}"
    np.testing.assert_allclose(ours[~nan_ours], ref[~nan_ref], rtol=tol, atol=tol, err_msg=what)


# ---------------------------------------------------------------------------- random cases
@st.composite
def cases(draw):
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    C = draw(st.integers(1, 5))
    used = draw(st.integers(1, C))  # classes in the ground truth (the others absent or pred only)
    block = draw(st.integers(1, 4))  # blocky maps so that boundaries are sparse
    noise = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    ignore = draw(st.sampled_from([None, 255, -1, C]))
    ignore_frac = draw(st.sampled_from([0.0, 0.1, 0.4, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    classes = rng.choice(C, used, replace=False)
    coarse = rng.choice(classes, size=(n, -(-h // block), -(-w // block)))
    gt = coarse.repeat(block, 1).repeat(block, 2)[:, :h, :w].astype(np.int64)
    pred = gt.copy()
    flip = rng.random(gt.shape) < noise
    pred[flip] = rng.choice(classes if draw(st.booleans()) else C, size=int(flip.sum()))
    if ignore is not None:
        gt[rng.random(gt.shape) < ignore_frac] = ignore
        if draw(st.booleans()):
            gt[rng.integers(n)] = ignore  # an image with no valid pixel
    options = dict(num_classes=C, ignore_index=ignore, tol=draw(st.integers(0, 3)),
                   drop_bg=draw(st.booleans()))
    return pred, gt, options


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_matches_brute_force_reference(case):
    pred, gt, options = case
    ref, ref_per = reference(pred, gt, **options)
    ours = evaluate(pred, gt, **options)
    assert set(ours) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert_close(ours[name], ref[name], tol=1e-9, what=f"{name} {options}")
    ours_per = evaluate_per_class(pred, gt, **options)
    assert set(ours_per) == set(PER_CLASS)
    for name in PER_CLASS:
        assert_close(ours_per[name], ref_per[name], tol=1e-9, what=f"per-class {name} {options}")


def test_all_pixels_ignored_gives_nan_everywhere():
    gt = np.full((2, 5, 6), 255)
    pred = np.random.default_rng(0).integers(0, 3, gt.shape)
    ours = evaluate(pred, gt, num_classes=3, ignore_index=255)
    assert all(math.isnan(v) for v in ours.values()), ours


def test_hand_computed_example():
    pred = torch.tensor([[[0, 1], [1, 1]]])
    target = torch.tensor([[[0, 1], [0, 1]]])
    ours = evaluate(pred, target, num_classes=2, metrics=["miou", "gacc", "macc", "mdice"])
    assert ours["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-15)
    assert ours["gacc"] == pytest.approx(3 / 4, abs=1e-15)
    assert ours["macc"] == pytest.approx((1 / 2 + 1) / 2, abs=1e-15)
    assert ours["mdice"] == pytest.approx((2 / 3 + 4 / 5) / 2, abs=1e-15)


# --------------------------------------------------------------------------- golden parity
GOLDEN_FILES = sorted(GOLDEN.glob("asl_eval_metrics_*.npz")) if GOLDEN.is_dir() else []
FAST_KEYS = {"mIoU": "miou", "mAcc": "macc", "aAcc": "gacc", "BIoU": "biou", "BF1": "bf1",
             "FWIoU_sum": "fwiou"}


def _golden(path: Path):
    data = np.load(path)
    options = dict(num_classes=int(data["num_classes"]), ignore_index=int(data["ignore_index"]),
                   tol=5)
    return data, options


@pytest.mark.skipif(not GOLDEN_FILES, reason=f"golden vectors not found in {GOLDEN}")
@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("drop_bg", [False, True], ids=["keepbg", "dropbg"])
def test_golden_fast_metrics(path, drop_bg):
    data, options = _golden(path)
    prefix = f"fast_{'dropbg' if drop_bg else 'keepbg'}_"
    ours = evaluate(data["preds"], data["gts"], drop_bg=drop_bg, **options)
    for key, name in FAST_KEYS.items():
        assert_close(ours[name], data[prefix + key], tol=1e-6, what=prefix + key)
    per = evaluate_per_class(data["preds"], data["gts"], drop_bg=drop_bg, **options)
    for key, name in (("iou", "miou"), ("acc", "macc"), ("biou", "biou"), ("bf1", "bf1")):
        values = per[name]
        if key == "bf1" and drop_bg:  # the reference removes class 0's entry; ours has NaN there
            assert math.isnan(values[0])
            values = values[1:]
        assert_close(values, data[f"{prefix}class_{key}"], tol=1e-6, what=f"{prefix}class_{key}")


@pytest.mark.skipif(not GOLDEN_FILES, reason=f"golden vectors not found in {GOLDEN}")
@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden_mmseg_metrics(path):
    data, options = _golden(path)
    per = evaluate_per_class(data["preds"], data["gts"], **options)
    for key, name in (("iou", "miou"), ("acc", "macc"), ("dice", "mdice")):
        assert_close(per[name], data[f"mmseg_{key}"], tol=1e-6, what=f"mmseg_{key}")
    ours = evaluate(data["preds"], data["gts"], metrics=["gacc"], **options)
    assert_close(ours["gacc"], data["mmseg_all_acc"], tol=1e-6, what="mmseg_all_acc")


@pytest.mark.skipif(not GOLDEN_FILES, reason=f"golden vectors not found in {GOLDEN}")
def test_golden_reference_fwiou_is_inflated_and_ours_is_textbook():
    """The reference reports nanmean(freq * IoU) * C, which exceeds the textbook sum_c freq_c
    IoU_c when a class has NaN IoU (class 3 in the N3 file: 0.6605 vs 0.5504)."""
    path = GOLDEN / "asl_eval_metrics_N3_C6_H48_W64_ign255.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    data, options = _golden(path)
    freq, iou = data["fast_keepbg_class_freq"], data["fast_keepbg_class_iou"]
    C = options["num_classes"]
    assert float(data["fast_keepbg_FWIoU"]) == pytest.approx(np.nanmean(freq * iou) * C, rel=1e-6)
    ours = evaluate(data["preds"], data["gts"], metrics=["fwiou"], **options)["fwiou"]
    assert ours == pytest.approx(float(np.nansum(freq * iou)), rel=1e-6)
    assert float(data["fast_keepbg_FWIoU"]) - ours > 0.1


# -------------------------------------------------------------------------------- streaming
def _random_labels(rng, n, C, ignore, h=10, w=13):
    gt = rng.integers(0, C, (n, h, w)).repeat(2, 1)[:, :h]
    gt[rng.random(gt.shape) < 0.1] = ignore
    pred = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, C, gt.shape), gt)
    return np.where(pred == ignore, 0, pred), gt


@pytest.mark.parametrize("drop_bg", [False, True])
def test_streaming_equals_one_shot(drop_bg):
    rng = np.random.default_rng(1)
    pred, gt = _random_labels(rng, 11, 4, 255)
    options = dict(num_classes=4, ignore_index=255, tol=2, drop_bg=drop_bg)
    whole = evaluate(pred, gt, batch_size=100, **options)
    acc = MetricAccumulator(**options)
    for start, stop in ((0, 1), (1, 5), (5, 6), (6, 11)):
        acc.update(torch.from_numpy(pred[start:stop]), torch.from_numpy(gt[start:stop]))
    streamed = acc.compute()
    for name in METRIC_NAMES:
        assert streamed[name] == pytest.approx(whole[name], abs=1e-12), name
    assert evaluate(pred, gt, batch_size=3, **options) == pytest.approx(whole, abs=1e-12)
    acc.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        acc.compute()


def test_large_batch_equals_image_by_image():
    """A batch bigger than the accumulator's internal chunk gives the per-image sums."""
    rng = np.random.default_rng(4)
    pred, gt = _random_labels(rng, 8, 5, 255, h=256, w=256)
    options = dict(num_classes=5, ignore_index=255, tol=3)
    batched, single = MetricAccumulator(**options), MetricAccumulator(**options)
    batched.update(pred, gt)
    for i in range(len(gt)):
        single.update(pred[i:i + 1], gt[i:i + 1])
    assert batched.compute() == pytest.approx(single.compute(), abs=1e-12)


@pytest.mark.slow
def test_counts_stay_exact_beyond_float32_integers():
    """More than 2**24 pixels in one image: float32 counts would round (gAcc would be 1.0)."""
    side = 4097  # 16,785,409 pixels > 2**24
    target = torch.zeros((1, side, side), dtype=torch.long)
    pred = target.clone()
    pred[0, 0, 0] = 1
    ours = evaluate(pred, target, num_classes=2, metrics=["gacc", "miou"])
    n = side * side
    assert ours["gacc"] == (n - 1) / n
    assert ours["miou"] == pytest.approx((n - 1) / n / 2, abs=1e-15)


def _tensors(obj, seen=None):
    """Every tensor / array reachable from ``obj``'s attributes, dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value, seen)
    elif isinstance(obj, MetricAccumulator):
        for value in vars(obj).values():
            yield from _tensors(value, seen)


def test_accumulator_memory_does_not_grow():
    rng = np.random.default_rng(2)
    C = 5
    acc = MetricAccumulator(num_classes=C, ignore_index=255, tol=1)
    sizes = []
    for _ in range(40):
        acc.update(*_random_labels(rng, 2, C, 255))
        sizes.append(sum(t.numel() for t in _tensors(acc)))
    stored = list(_tensors(acc))
    assert stored, "expected the accumulator to hold per-class sums"
    assert all(tuple(t.shape) in ((C,), ()) for t in stored), [tuple(t.shape) for t in stored]
    assert sizes[-1] == sizes[0]
    assert acc.images == 80


# ----------------------------------------------------------------------------------- errors
def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 4, 4\).*\(1, 4, 5\)"):
        evaluate(np.zeros((1, 4, 4), int), np.zeros((1, 4, 5), int), num_classes=2)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        evaluate(np.zeros(4, int), np.zeros(4, int), num_classes=2)
    acc = MetricAccumulator(num_classes=2)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 4\)"):
        acc.update(np.zeros((4, 4), int), np.zeros((4, 4), int))  # update wants [N,H,W]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_non_integer_labels_rejected(dtype):
    with pytest.raises(TypeError, match="integer"):
        evaluate(np.zeros((1, 3, 3), dtype), np.zeros((1, 3, 3), int), num_classes=2)
    with pytest.raises(TypeError, match="target"):
        evaluate(np.zeros((1, 3, 3), int), torch.zeros((1, 3, 3), dtype=torch.float32),
                 num_classes=2)


def test_labels_out_of_range_rejected():
    gt = np.zeros((1, 3, 3), int)
    gt[0, 0, 0], gt[0, 1, 1], gt[0, 2, 2] = 7, 255, -2
    with pytest.raises(ValueError, match=r"target.*-2, 7.*\[0, 3\)"):
        evaluate(np.zeros_like(gt), gt, num_classes=3, ignore_index=255)
    pred = np.zeros_like(gt)
    pred[0, 0, 0] = 255  # the ignore index is not a valid prediction
    with pytest.raises(ValueError, match=r"pred.*255.*\[0, 3\)"):
        evaluate(pred, np.zeros_like(gt), num_classes=3, ignore_index=255)


def test_unknown_metric_name_suggests():
    with pytest.raises(ValueError, match="did you mean 'miou'"):
        evaluate(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int), num_classes=2,
                 metrics=["miuo"])
    with pytest.raises(ValueError, match="empty"):
        MetricAccumulator(num_classes=2, metrics=[])


@pytest.mark.parametrize("options, match", [
    (dict(num_classes=0), "num_classes"), (dict(num_classes=-3), "num_classes"),
    (dict(num_classes=2.0), "num_classes"), (dict(num_classes=2, tol=-1), "tol"),
])
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        MetricAccumulator(**options)
    with pytest.raises(ValueError, match=match):
        evaluate(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int), **options)


# ------------------------------------------------------------------------------ input types
def test_numpy_torch_and_2d_inputs_agree():
    rng = np.random.default_rng(3)
    pred, gt = _random_labels(rng, 1, 3, 255)
    options = dict(num_classes=3, ignore_index=255, tol=1)
    base = evaluate(pred, gt, **options)
    variants = [
        evaluate(torch.from_numpy(pred), torch.from_numpy(gt), **options),
        evaluate(pred.astype(np.uint8), gt.astype(np.uint8), **options),
        evaluate(torch.from_numpy(pred).int(), gt, **options),
        evaluate(pred[0], gt[0], **options),
        evaluate(torch.from_numpy(pred[0]), torch.from_numpy(gt[0]), **options),
    ]
    for other in variants:
        assert other.keys() == base.keys()
        for name in base:
            assert other[name] == base[name] or (math.isnan(other[name]) and math.isnan(base[name]))
    per_np = evaluate_per_class(pred, gt, **options)
    per_torch = evaluate_per_class(torch.from_numpy(pred), torch.from_numpy(gt), **options)
    for name in per_np:
        np.testing.assert_array_equal(per_np[name], per_torch[name])


# ------------------------------------------------------ the accumulator as a device module
def test_accumulator_takes_logits_like_their_argmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 16, 16, generator=gen)
    target = torch.randint(0, 4, (3, 16, 16), generator=gen)
    from_logits, from_labels = MetricAccumulator(num_classes=4), MetricAccumulator(num_classes=4)
    from_logits.update(logits, target)
    from_labels.update(logits.argmax(1), target)
    assert from_logits.compute() == from_labels.compute()
    with pytest.raises(ValueError, match=r"C=num_classes=5 channels.*\(3, 4, 16, 16\)"):
        MetricAccumulator(num_classes=5).update(logits, target)


def test_accumulator_update_never_reads_the_device():
    """On the meta device every host read (.item(), bool(), a copy to CPU) raises, so an update
    that runs there syncs nothing: on a GPU it does not wait for the device."""
    acc = MetricAccumulator(num_classes=3, tol=1, validate_args=False).to("meta")
    assert acc.device.type == "meta"
    logits = torch.zeros(2, 3, 12, 12, device="meta")
    acc.update(logits, torch.zeros(2, 12, 12, dtype=torch.long, device="meta"))
    assert acc.images == 2
    assert all(t.device.type == "meta" for sums in acc._sums.values() for t in sums.values())
    checked = MetricAccumulator(num_classes=3).to("meta")  # validate_args reads a flag back
    with pytest.raises(RuntimeError, match="meta"):
        checked.update(logits, torch.zeros(2, 12, 12, dtype=torch.long, device="meta"))


def test_accumulator_moves_with_to_and_copies_batches_to_its_device():
    rng = np.random.default_rng(4)
    pred, target = _random_labels(rng, 2, 3, 255)
    acc = MetricAccumulator(num_classes=3, ignore_index=255).to(torch.device("cpu"))
    acc.update(pred, target)  # numpy arrays are copied to the accumulator's device
    want = evaluate(pred, target, num_classes=3, ignore_index=255)
    assert acc.compute() == want
    acc.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        acc.compute()


def _distributed_rank(rank: int, world: int, init: str, pred, target, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        acc = MetricAccumulator(num_classes=4, ignore_index=255, tol=1)
        if rank == 0:  # rank 1 sees no batch at all: it still takes part in the sum
            acc.update(pred, target)
        acc.all_reduce()
        torch.save(acc.compute(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_accumulator_all_reduce_sums_over_ranks(tmp_path):
    """Two gloo ranks on CPU: after all_reduce every rank computes the metrics of all batches."""
    import torch.multiprocessing as mp

    rng = np.random.default_rng(5)
    pred, target = _random_labels(rng, 3, 4, 255)
    out = str(tmp_path / "metrics")
    mp.spawn(_distributed_rank, args=(2, f"file://{tmp_path / 'init'}", pred, target, out),
             nprocs=2, join=True)
    want = evaluate(pred, target, num_classes=4, ignore_index=255, tol=1)
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}")
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], nan_ok=True), key


def test_all_reduce_without_a_process_group_is_a_clear_error():
    with pytest.raises(ValueError, match="init_process_group"):
        MetricAccumulator(num_classes=2).all_reduce()
