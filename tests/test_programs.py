"""Metric programs run with the exact operators (autoloss.core.programs) against independent
bincount / scipy.ndimage computations, plus program lookup and user-program loading."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from autoloss.core.metrics import METRIC_NAMES, evaluate
from autoloss.core.operators import ExactOps
from autoloss.core.programs import (
    BUILTIN_PROGRAMS,
    MetricProgram,
    class_mean,
    get_program,
    load_user_program,
)
from autoloss.utils.trust import ENV_FILES, trust_code

IGNORE = 255


# --------------------------------------------------------------------- independent counts
def one_hot(labels: np.ndarray, num_classes: int, valid: np.ndarray | None, dtype) -> torch.Tensor:
    """``[N,H,W]`` labels -> ``[N,C,H,W]`` 0/1 (all zero where ``valid`` is False)."""
    out = labels[:, None] == np.arange(num_classes)[None, :, None, None]
    if valid is not None:
        out &= valid[:, None]
    return torch.from_numpy(out).to(dtype)


def region_counts(pred, gt, keep, num_classes):
    """inter, union, gt, pred per class over the pixels in ``keep`` (from a bincount)."""
    C = num_classes
    cm = np.bincount(gt[keep] * C + pred[keep], minlength=C * C).reshape(C, C)
    inter, n_gt, n_pred = np.diag(cm), cm.sum(1), cm.sum(0)
    return {"inter": inter, "union": n_gt + n_pred - inter, "gt": n_gt, "pred": n_pred}


def class_edges(labels, member, c):
    """``[N,H,W]``: pixels of class c with an in-image 3x3 neighbour that is not of class c."""
    mask = member & (labels == c)
    inner = ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3)), border_value=1)
    return mask & ~inner


def dilated(mask, tol):
    return ndimage.binary_dilation(mask, structure=np.ones((1, 2 * tol + 1, 2 * tol + 1)))


def boundary_counts(pred, gt, valid, num_classes, tol, drop_bg):
    """BF1 counts and the BIoU band, per class, with scipy.ndimage morphology."""
    counts = {k: np.zeros(num_classes, np.int64) for k in ("n_gt", "n_pred", "match_pred",
                                                          "match_gt")}
    band = np.zeros(gt.shape, bool)
    everywhere = np.ones(gt.shape, bool)
    for c in range(num_classes):
        e_gt = class_edges(gt, valid, c)
        e_pred = class_edges(pred, everywhere, c)
        d_gt = dilated(e_gt, tol)
        if not (drop_bg and c == 0):
            band |= d_gt
        else:
            e_gt = d_gt = np.zeros_like(e_gt)
        counts["n_gt"][c] = np.count_nonzero(e_gt)
        counts["n_pred"][c] = np.count_nonzero(e_pred)
        counts["match_pred"][c] = np.count_nonzero(e_pred & d_gt)
        counts["match_gt"][c] = np.count_nonzero(dilated(e_pred, tol) & e_gt)
    return counts, band


@st.composite
def label_maps(draw):
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 20)), draw(st.integers(1, 20))
    C = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    block = draw(st.integers(1, 5))
    coarse = rng.integers(0, C, (n, -(-h // block), -(-w // block)))
    gt = coarse.repeat(block, 1).repeat(block, 2)[:, :h, :w]
    pred = np.where(rng.random(gt.shape) < draw(st.sampled_from([0.0, 0.1, 0.5])),
                    rng.integers(0, C, gt.shape), gt)
    gt = np.where(rng.random(gt.shape) < draw(st.sampled_from([0.0, 0.2, 1.0])), IGNORE, gt)
    return pred, gt, C, draw(st.integers(0, 4)), draw(st.booleans())


def _inputs(pred, gt, C, dtype):
    valid = gt != IGNORE
    P = one_hot(pred, C, None, dtype)
    G = one_hot(gt, C, valid, dtype)
    return P, G, torch.from_numpy(valid[:, None]).to(dtype), valid


def _assert_counts_equal(stats, expected, dtype, what):
    assert set(stats) >= set(expected), (what, sorted(stats))
    for key, value in expected.items():
        want = torch.as_tensor(np.asarray(value), dtype=dtype)
        assert stats[key].dtype == dtype, (what, key, stats[key].dtype)
        assert torch.equal(stats[key], want), f"{what}[{key}]: {stats[key]} != {want}"


@settings(max_examples=80, deadline=None)
@given(label_maps(), st.sampled_from([torch.float32, torch.float64]))
def test_exact_programs_give_exact_counts(case, dtype):
    pred, gt, C, tol, drop_bg = case
    P, G, valid_t, valid = _inputs(pred, gt, C, dtype)
    ops = ExactOps()
    region = region_counts(pred, gt, valid, C)
    for name in ("miou", "fwiou", "mdice"):
        stats = BUILTIN_PROGRAMS[name].run_stats(ops, P, G, valid_t, tol=tol, drop_bg=drop_bg)
        _assert_counts_equal(stats, region, dtype, name)
    for name in ("macc", "gacc"):
        stats = BUILTIN_PROGRAMS[name].run_stats(ops, P, G, valid_t, tol=tol, drop_bg=drop_bg)
        _assert_counts_equal(stats, {"hit": region["inter"], "gt": region["gt"]}, dtype, name)
    counts, band = boundary_counts(pred, gt, valid, C, tol, drop_bg)
    stats = BUILTIN_PROGRAMS["bf1"].run_stats(ops, P, G, valid_t, tol=tol, drop_bg=drop_bg)
    _assert_counts_equal(stats, counts, dtype, "bf1")
    stats = BUILTIN_PROGRAMS["biou"].run_stats(ops, P, G, valid_t, tol=tol, drop_bg=drop_bg)
    _assert_counts_equal(stats, region_counts(pred, gt, valid & band, C), dtype, "biou")


def test_builtin_programs_cover_metric_names():
    assert set(BUILTIN_PROGRAMS) == set(METRIC_NAMES)
    for name, program in BUILTIN_PROGRAMS.items():
        assert program.name == name and program.description
        assert set(program.options) <= {"tol", "drop_bg"}


# ------------------------------------------------------------------------------ class_mean
def test_class_mean():
    values = torch.tensor([0.2, 0.4, 0.9, 0.0], dtype=torch.float64)
    present = torch.tensor([True, True, False, True])
    assert float(class_mean(values, present)) == pytest.approx(0.6 / 3, abs=1e-15)
    assert float(class_mean(values, present, "all")) == pytest.approx(1.5 / 4, abs=1e-15)
    assert float(class_mean(values, torch.zeros(4, dtype=torch.bool))) == 0.0
    scalar = torch.tensor(0.7)
    assert class_mean(scalar, None) is scalar
    rows = class_mean(torch.stack([values, 1 - values]), torch.stack([present, ~present]))
    assert rows.shape == (2,)
    assert torch.allclose(rows, torch.tensor([0.2, 0.1], dtype=torch.float64), atol=1e-15)
    with pytest.raises(ValueError, match="classes must be 'present' or 'all'"):
        class_mean(values, present, "mean")


# ----------------------------------------------------------------------------- get_program
def test_get_program():
    assert get_program("miou") is BUILTIN_PROGRAMS["miou"]
    assert get_program(BUILTIN_PROGRAMS["bf1"]) is BUILTIN_PROGRAMS["bf1"]
    with pytest.raises(ValueError, match=r"unknown metric 'miuo'.*did you mean 'miou'"):
        get_program("miuo")
    with pytest.raises(ValueError, match=r"did you mean 'bf1'"):
        get_program("bf2")
    with pytest.raises(ValueError, match=r"unknown metric 'zzz': expected one of \[") as err:
        get_program("zzz")
    assert "did you mean" not in str(err.value)


# ---------------------------------------------------------------------- user programs
USER_FILE = textwrap.dedent('''
    """A user's Tversky index, TI_c = TP / (TP + ALPHA FP + BETA FN), with the autoloss operators."""
    from autoloss.core.operators import total
    from autoloss.core.programs import MetricProgram

    ALPHA, BETA = 0.3, 0.7


    def _stats(ops, P, G, valid):
        return {
            "tp": total(ops.and_(P, G, ("inter", None)), valid),
            "either": total(ops.or_(P, G, ("union", None)), valid),
            "gt": total(G, valid),
            "pred": total(P, valid),
        }


    def _score(s, ops):
        fp = s["either"] - s["gt"]
        fn = s["either"] - s["pred"]
        return ops.ratio(s["tp"], s["tp"] + ALPHA * fp + BETA * fn), ops.present(s["gt"], s["pred"])


    tversky = MetricProgram("tversky", ("inter", "union"), _stats, _score)


    def make_tversky():
        return tversky


    not_a_program = 42


    def returns_text():
        return "tversky"
''')


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    path = tmp_path / "my_metrics.py"
    path.write_text(USER_FILE)
    monkeypatch.setenv(ENV_FILES, "")  # restored afterwards
    trust_code(path)  # user files run only when trusted (autoloss.utils.trust, tests/test_trust.py)
    return path


def brute_force_tversky(pred, gt, num_classes, alpha=0.3, beta=0.7):
    scores = []
    for c in range(num_classes):
        tp = fp = fn = 0
        for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
            if g == IGNORE:
                continue
            tp += p == c and g == c
            fp += p == c and g != c
            fn += p != c and g == c
        if tp + fp + fn:
            scores.append(tp / (tp + alpha * fp + beta * fn))
    return sum(scores) / len(scores)


def test_user_program_loads_and_matches_brute_force(user_file):
    reference = f"{user_file}:tversky"
    program = load_user_program(reference)
    assert isinstance(program, MetricProgram)
    assert program.name == "tversky" and program.reference == reference
    assert load_user_program(f"{user_file}:make_tversky").name == "tversky"
    assert get_program(reference).name == "tversky"
    rng = np.random.default_rng(5)
    for C in (2, 3, 5):
        gt = rng.integers(0, C, (2, 9, 11))
        pred = np.where(rng.random(gt.shape) < 0.4, rng.integers(0, C, gt.shape), gt)
        gt[rng.random(gt.shape) < 0.15] = IGNORE
        ours = evaluate(pred, gt, num_classes=C, ignore_index=IGNORE, metrics=[reference])
        assert ours[reference] == pytest.approx(brute_force_tversky(pred, gt, C), abs=1e-12)
        stats = program.run_stats(ExactOps(), *_inputs(pred, gt, C, torch.float64)[:3])
        region = region_counts(pred, gt, gt != IGNORE, C)
        _assert_counts_equal({"tp": stats["tp"], "either": stats["either"]},
                             {"tp": region["inter"], "either": region["union"]},
                             torch.float64, "tversky")


def test_user_program_errors(user_file, tmp_path):
    missing = tmp_path / "nowhere.py"
    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        load_user_program(f"{missing}:tversky")
    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        get_program(f"{missing}:tversky")
    with pytest.raises(ValueError, match=r"defines no 'tversk'.*did you mean 'tversky'"):
        load_user_program(f"{user_file}:tversk")
    with pytest.raises(TypeError, match="MetricProgram.*int"):
        load_user_program(f"{user_file}:not_a_program")
    with pytest.raises(TypeError, match="MetricProgram.*str"):
        load_user_program(f"{user_file}:returns_text")
