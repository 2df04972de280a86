"""Cross-entropy, binary cross-entropy, focal, soft Dice / Jaccard / Tversky, and the shared
input checks: independent references, edge cases, gradcheck, options and error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autoloss.losses._validate import (
    Reduction,
    check_choice,
    check_logits_and_target,
)
from autoloss.losses.cross_entropy import (
    BinaryCrossEntropyLoss,
    CrossEntropyLoss,
    binary_cross_entropy,
    cross_entropy,
)
from autoloss.losses.focal import FocalLoss, focal_loss
from autoloss.losses.region import (
    DiceLoss,
    JaccardLoss,
    TverskyLoss,
    dice_loss,
    jaccard_loss,
    tversky_loss,
)

MODULES = [CrossEntropyLoss, BinaryCrossEntropyLoss, FocalLoss, DiceLoss, JaccardLoss,
           TverskyLoss]
MULTICLASS = [cross_entropy, focal_loss, dice_loss, jaccard_loss, tversky_loss]


def _case(seed=0, n=2, c=4, h=5, w=6, ignore=None, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    labels = torch.randint(0, c, (n, h, w), generator=gen)
    labels[labels == 1] = 0  # class 1 absent
    if ignore is not None:
        labels[torch.rand(n, h, w, generator=gen) < 0.2] = ignore
    return logits, labels


def _soft(seed=0, n=2, c=4, h=5, w=6):
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64), 1)


# ---------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", [None, 3, 255])
def test_cross_entropy_matches_torch(reduction, ignore) -> None:
    logits, labels = _case(ignore=ignore)
    weights = [1.0, 0.5, 2.0, 0.25]
    ours = cross_entropy(logits, labels, ignore_index=ignore, class_weights=weights,
                         label_smoothing=0.1, reduction=reduction)
    ref = F.cross_entropy(logits, labels, weight=torch.tensor(weights, dtype=torch.float64),
                          ignore_index=-100 if ignore is None else ignore, label_smoothing=0.1,
                          reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    soft = _soft()
    torch.testing.assert_close(cross_entropy(logits, soft, reduction=reduction),
                               F.cross_entropy(logits, soft, reduction=reduction))


def test_binary_cross_entropy_matches_formula() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 5, 5), generator=gen)
    y[0, 0] = 255
    keep = y != 255
    ref = -(y[keep] * F.logsigmoid(x[keep]) + (1 - y[keep]) * F.logsigmoid(-x[keep])).mean()
    assert binary_cross_entropy(x, y, ignore_index=255).item() == pytest.approx(ref.item())
    assert binary_cross_entropy(x.unsqueeze(1), y, ignore_index=255).item() == pytest.approx(
        ref.item())
    pos = binary_cross_entropy(x, y.clamp(0, 1), pos_weight=3.0, reduction="sum")
    ref = -(3 * y.clamp(0, 1) * F.logsigmoid(x) + (1 - y.clamp(0, 1)) * F.logsigmoid(-x)).sum()
    assert pos.item() == pytest.approx(ref.item())


# ---------------------------------------------------------------- focal
def _focal_ref(logits, labels, gamma, alpha, weights, ignore):
    p = torch.softmax(logits, 1)
    total, norm = 0.0, 0.0
    for b in range(labels.shape[0]):
        for i in range(labels.shape[1]):
            for j in range(labels.shape[2]):
                y = int(labels[b, i, j])
                if y == ignore:
                    continue
                pt = p[b, y, i, j]
                total = total - alpha * weights[y] * (1 - pt) ** gamma * torch.log(pt)
                norm += weights[y]
    return total / norm


def test_focal_matches_definition() -> None:
    logits, labels = _case(seed=2, ignore=255)
    weights = [0.5, 1.0, 2.0, 1.5]
    ours = focal_loss(logits, labels, gamma=2.0, alpha=0.25, class_weights=weights,
                      ignore_index=255)
    ref = _focal_ref(logits, labels, 2.0, 0.25, weights, 255)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    logits, labels = _case(seed=3, ignore=255)
    for target in (labels, _soft(seed=3)):
        ignore = 255 if not target.is_floating_point() else None
        for reduction in ("mean", "sum", "none"):
            torch.testing.assert_close(
                focal_loss(logits, target, gamma=0.0, ignore_index=ignore,
                           class_weights=[1.0, 2.0, 3.0, 4.0], reduction=reduction),
                cross_entropy(logits, target, ignore_index=ignore,
                              class_weights=[1.0, 2.0, 3.0, 4.0], reduction=reduction))


def test_focal_soft_matches_definition() -> None:
    logits, soft = _case(seed=4)[0], _soft(seed=4)
    p = torch.softmax(logits, 1)
    ref = -(soft * (1 - p) ** 1.5 * torch.log(p)).sum(1).mean()
    assert focal_loss(logits, soft, gamma=1.5).item() == pytest.approx(ref.item(), rel=1e-12)


# ---------------------------------------------------------------- region losses
def _region_ref(logits, labels, *, alpha, beta, gamma, smooth, per_image, classes, ignore):
    """Textbook soft Tversky: sum p*g over non-ignored pixels, loops over images/classes."""
    p = torch.softmax(logits, 1)
    n, c = p.shape[:2]
    keep = torch.ones_like(labels, dtype=torch.bool) if ignore is None else labels != ignore
    groups = [[b] for b in range(n)] if per_image else [list(range(n))]
    means = []
    for group in groups:
        vals = []
        for k in range(c):
            g = torch.cat([((labels[b] == k) & keep[b])[keep[b]].double() for b in group])
            q = torch.cat([p[b, k][keep[b]] for b in group])
            if classes == "present" and g.sum() == 0:
                continue
            tp = (q * g).sum()
            fp, fn = (q * (1 - g)).sum(), ((1 - q) * g).sum()
            vals.append((1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)) ** gamma)
        if vals:
            means.append(torch.stack(vals).mean())
    return torch.stack(means).mean()


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all"])
@pytest.mark.parametrize("ignore", [None, 2, 255])
def test_region_losses_match_textbook(per_image, classes, ignore) -> None:
    logits, labels = _case(seed=5, ignore=ignore)
    common = {"per_image": per_image, "classes": classes, "ignore_index": ignore}
    for fn, (alpha, beta) in ((dice_loss, (0.5, 0.5)), (jaccard_loss, (1.0, 1.0))):
        ref = _region_ref(logits, labels, alpha=alpha, beta=beta, gamma=1.0, smooth=1.0,
                          per_image=per_image, classes=classes, ignore=ignore)
        assert fn(logits, labels, **common).item() == pytest.approx(ref.item(), rel=1e-12)
    ref = _region_ref(logits, labels, alpha=0.3, beta=0.7, gamma=1.5, smooth=0.1,
                      per_image=per_image, classes=classes, ignore=ignore)
    ours = tversky_loss(logits, labels, alpha=0.3, beta=0.7, gamma=1.5, smooth=0.1, **common)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)


def test_region_reductions_and_weights() -> None:
    logits, labels = _case(seed=6)
    per_class = dice_loss(logits, labels, reduction="none")
    assert per_class.shape == (4,) and per_class[1] == 0  # class 1 absent -> inactive -> 0
    assert dice_loss(logits, labels).item() == pytest.approx(per_class.sum().item() / 3)
    assert dice_loss(logits, labels, reduction="sum").item() == pytest.approx(
        per_class.sum().item())
    assert dice_loss(logits, labels, per_image=True, reduction="none").shape == (2, 4)
    weighted = dice_loss(logits, labels, class_weights=[2.0, 1.0, 0.0, 1.0], reduction="none")
    torch.testing.assert_close(weighted, per_class * torch.tensor([2.0, 1.0, 0.0, 1.0],
                                                                  dtype=torch.float64))
    listed = dice_loss(logits, labels, classes=[1, 3], reduction="none")
    assert listed[0] == 0 and listed[2] == 0 and listed[1] > 0 and listed[3] > 0


def test_region_ignore_removed_from_both_counts() -> None:
    logits, labels = _case(seed=7, n=2)
    labels[1] = 255  # the whole second image ignored: batch loss equals the first image alone
    for fn in (dice_loss, jaccard_loss, tversky_loss):
        assert fn(logits, labels, ignore_index=255).item() == pytest.approx(
            fn(logits[:1], labels[:1]).item(), rel=1e-13)


def test_region_soft_labels_zero_at_the_labels() -> None:
    soft = _soft(seed=8)
    for fn in (dice_loss, jaccard_loss, tversky_loss):
        assert fn(torch.log(soft), soft, classes="all").item() < 1e-12
        assert fn(torch.zeros_like(soft), soft, classes="all").item() > 1e-3


# ---------------------------------------------------------------- shared edge cases
@pytest.mark.parametrize("fn", MULTICLASS)
def test_all_ignored_gives_zero_with_zero_grad(fn) -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = fn(logits, torch.full((2, 4, 4), 255), ignore_index=255)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0
    binary = torch.randn(2, 4, 4, requires_grad=True)
    loss = binary_cross_entropy(binary, torch.full((2, 4, 4), 255), ignore_index=255)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(binary.grad) == 0


@pytest.mark.parametrize("fn", MULTICLASS)
def test_extreme_logits_and_single_class_have_finite_grads(fn) -> None:
    logits = (torch.randn(2, 3, 4, 4).sign() * 1e4).requires_grad_(True)
    fn(logits, torch.zeros(2, 4, 4, dtype=torch.long)).backward()
    assert torch.isfinite(logits.grad).all()
    binary = (torch.randn(2, 4, 4).sign() * 1e4).requires_grad_(True)
    binary_cross_entropy(binary, torch.randint(0, 2, (2, 4, 4))).backward()
    assert torch.isfinite(binary.grad).all()


def test_gradcheck_float64(single_thread) -> None:
    logits, labels = _case(seed=9, n=2, c=3, h=3, w=4, ignore=255)
    labels = labels.clamp(max=2).masked_fill(labels == 255, 255)
    soft = _soft(seed=9, n=2, c=3, h=3, w=4)
    x = logits.clone().requires_grad_(True)
    checks = [
        lambda z: cross_entropy(z, labels, ignore_index=255, label_smoothing=0.1,
                                class_weights=[1.0, 2.0, 0.5]),
        lambda z: cross_entropy(z, soft),
        lambda z: focal_loss(z, labels, gamma=2.0, ignore_index=255),
        lambda z: focal_loss(z, soft, gamma=0.5),
        lambda z: dice_loss(z, labels, ignore_index=255, per_image=True),
        lambda z: jaccard_loss(z, soft, classes="all"),
        lambda z: tversky_loss(z, labels, gamma=4 / 3, ignore_index=255, classes="all"),
        lambda z: binary_cross_entropy(z[:, 0], labels.clamp(max=1), pos_weight=2.0),
    ]
    for check in checks:
        assert torch.autograd.gradcheck(check, (x,))


# ---------------------------------------------------------------- modules, options, errors
@pytest.mark.parametrize("cls", MODULES)
def test_module_round_trip_and_equals_function(cls) -> None:
    module = cls(ignore_index=255)
    spec = module.to_dict()
    assert spec["name"] == cls.name and spec["ignore_index"] == 255
    rebuilt = cls(**{k: v for k, v in spec.items() if k != "name"})
    assert rebuilt.to_dict() == spec
    logits, labels = _case(seed=10, ignore=255)
    if cls is BinaryCrossEntropyLoss:
        logits, labels = logits[:, 0], labels.clamp(max=1).masked_fill(labels == 255, 255)
    assert module(logits, labels).item() == rebuilt(logits, labels).item()


def test_module_forward_uses_its_options() -> None:
    logits, labels = _case(seed=11, ignore=255)
    opts = {"gamma": 2.0, "smooth": 0.5, "per_image": True, "classes": "all",
            "ignore_index": 255, "class_weights": [1.0, 2.0, 3.0, 4.0]}
    module = TverskyLoss(alpha=0.2, beta=0.8, **opts)
    assert module(logits, labels).item() == tversky_loss(logits, labels, alpha=0.2, beta=0.8,
                                                         **opts).item()
    assert "class_weights" in dict(module.named_buffers())
    assert module.double().class_weights.dtype == torch.float64
    assert module.to_dict()["class_weights"] == [1.0, 2.0, 3.0, 4.0]
    focal = FocalLoss(gamma=1.0, alpha=0.5, class_weights=[1.0, 1.0, 2.0, 2.0],
                      ignore_index=255, reduction="sum")
    assert focal(logits, labels).item() == focal_loss(
        logits, labels, gamma=1.0, alpha=0.5, class_weights=[1.0, 1.0, 2.0, 2.0],
        ignore_index=255, reduction="sum").item()


@pytest.mark.parametrize(("cls", "kwargs", "match"), [
    (CrossEntropyLoss, {"reduction": "avg"}, "reduction must be one of"),
    (CrossEntropyLoss, {"reduction": "mena"}, "did you mean 'mean'"),
    (CrossEntropyLoss, {"label_smoothing": 1.5}, "label_smoothing"),
    (CrossEntropyLoss, {"class_weights": "abc"}, "class_weights"),
    (CrossEntropyLoss, {"ignore_index": True}, "ignore_index"),
    (BinaryCrossEntropyLoss, {"pos_weight": -1.0}, "pos_weight"),
    (FocalLoss, {"gamma": -1.0}, "gamma"),
    (FocalLoss, {"alpha": float("nan")}, "alpha"),
    (DiceLoss, {"smooth": 0.0}, "smooth must be > 0"),
    (DiceLoss, {"per_image": "yes"}, "per_image"),
    (JaccardLoss, {"classes": "Al"}, "did you mean 'all'"),
    (TverskyLoss, {"alpha": -0.5}, "alpha"),
    (TverskyLoss, {"gamma": 0.0}, "gamma"),
])
def test_bad_options(cls, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_unknown_option_is_an_error() -> None:
    with pytest.raises(TypeError):
        DiceLoss(smoth=1.0)


# ---------------------------------------------------------------- input checks
def test_check_logits_and_target_modes() -> None:
    logits, labels = _case()
    assert check_logits_and_target(logits, labels, ignore_index=None, allow_soft=False) == "hard"
    assert check_logits_and_target(logits, labels.to(torch.uint8), ignore_index=None,
                                   allow_soft=False) == "hard"
    assert check_logits_and_target(logits, _soft(), ignore_index=None, allow_soft=True) == "soft"
    assert check_logits_and_target(logits, torch.full_like(labels, 9), ignore_index=None,
                                   allow_soft=False, high_labels_ignored=True) == "hard"


@pytest.mark.parametrize(("logits", "target", "kwargs", "error", "match"), [
    (torch.randn(4, 5, 6), torch.zeros(4, 5, 6, dtype=torch.long), {}, ValueError,
     r"logits must be \[N,C,H,W\], but got shape \(4, 5, 6\)"),
    (torch.randn(2, 3, 4, 5), torch.zeros(2, 4, 4, dtype=torch.long), {}, ValueError,
     r"\(2, 3, 4, 5\).*\(2, 4, 4\)"),
    (torch.randn(2, 3, 4, 5), torch.full((2, 4, 5), 3), {}, ValueError,
     r"label values \[3\] outside the allowed range \[0, 3\).*ignore_index=None"),
    (torch.randn(2, 3, 4, 5), torch.arange(40).reshape(2, 4, 5) - 20, {"ignore_index": 255},
     ValueError, r"\[-20, -19, -18, -17, -16\] \(and \d+ more\)"),
    (torch.randn(2, 3, 4, 5), torch.zeros(2, 4, 5), {}, TypeError, r"target.long\(\)"),
    (torch.randn(2, 3, 4, 5), torch.full((2, 3, 4, 5), 0.5), {"allow_soft": True}, ValueError,
     r"sum to 1.*deviates by 0.5"),
    (torch.randn(2, 3, 4, 5), torch.full((2, 3, 4, 5), 1 / 3), {}, TypeError,
     "takes hard integer labels"),
    (torch.randn(2, 3, 4, 5), torch.full((2, 3, 4, 5), -0.1), {"allow_soft": True}, ValueError,
     r"\[0, 1\]"),
    (torch.randn(2, 3, 4, 5), torch.ones(2, 3, 4, 4) / 3, {"allow_soft": True}, ValueError,
     "soft target must have the logits' shape"),
    (torch.zeros(2, 3, 4, 5, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long), {},
     TypeError, "float tensor"),
    (torch.randn(2, 3, 4, 5), torch.zeros(2, 4, 5, dtype=torch.bool), {}, TypeError,
     "integer class labels"),
])
def test_check_logits_and_target_errors(logits, target, kwargs, error, match) -> None:
    options = {"ignore_index": None, "allow_soft": False, **kwargs}
    with pytest.raises(error, match=match):
        check_logits_and_target(logits, target, **options)


def test_label_error_names_ignore_index_that_is_also_valid() -> None:
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[0, 255], [7, 2]]])
    with pytest.raises(ValueError, match=r"\[7\].*ignore_index=255"):
        check_logits_and_target(logits, labels, ignore_index=255, allow_soft=False)


def test_check_choice_and_reduction() -> None:
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"mode must be one of \['alpha', 'beta'\], but got "
                                         r"mode='alpah'; did you mean 'alpha'\?"):
        check_choice("mode", "alpah", ("alpha", "beta"))
    values = torch.tensor([1.0, 2.0, 3.0])
    weights = torch.tensor([1.0, 0.0, 1.0])
    assert Reduction.parse("mean").apply(values, weights=weights).item() == 2.0
    assert Reduction.parse("sum").apply(values, weights=weights).item() == 4.0
    torch.testing.assert_close(Reduction.parse("none").apply(values, weights=weights),
                               torch.tensor([1.0, 0.0, 3.0]))
    assert Reduction.MEAN.apply(values, weights=torch.zeros(3)).item() == 0.0
    with pytest.raises(ValueError, match="reduction"):
        Reduction.parse("total")
