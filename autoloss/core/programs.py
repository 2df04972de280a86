"""Metric programs: each segmentation metric written once, over an operator set.

A :class:`MetricProgram` has two stages, as every count-based metric does:

1. ``stats(ops, P, G, valid, **options) -> dict[str, Tensor]``: per-class sums over pixels
   (and over the images of the batch). They are additive, so the exact metric streams over a
   dataset by adding them batch after batch.
2. ``score(stats, ops) -> (values, present)``: the formula. ``values`` is ``[C]`` per-class (then
   averaged over the ``present`` classes) or a scalar (``present`` is None).

``P`` is the prediction ``[N,C,H,W]`` (one-hot of the argmax for :class:`~autoloss.core.operators.ExactOps`,
softmax probabilities for :class:`~autoloss.core.operators.RelaxedOps`), ``G`` the one-hot ground truth
``[N,C,H,W]`` (all zero on ignored pixels) and ``valid`` the ``[N,1,H,W]`` mask of pixels whose
label is not the ignore index.

Conventions (the exact metrics follow the Auto Seg-Loss evaluation code,
https://github.com/fundamentalvision/Auto-Seg-Loss, ``mmseg/core/evaluation/metrics_fast.py``):

- a class absent from both ground truth and prediction has no value and is left out of means;
- FWIoU is the textbook ``sum_c freq_c * IoU_c``;
- BIoU is the IoU restricted to a band of width ``tol`` around ground-truth boundaries (the band
  ignores class 0's boundaries with ``drop_bg``); BF1 is the boundary F1 with tolerance ``tol``
  (class 0 left out with ``drop_bg``). As in the reference, BF1 uses every pixel: predicted edges
  inside ignored regions count, and ground-truth edges include borders with ignored regions.

Users define their own metric by building a ``MetricProgram`` in their own module (see
``docs/loss_files.md``, "Your own metric").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from autoloss.core.morphology import dilate, exact_edge
from autoloss.core.operators import OperatorSet, total
from autoloss.errors import InvalidTypeError, InvalidValueError, did_you_mean

__all__ = [
    "BUILTIN_PROGRAMS",
    "MetricProgram",
    "class_mean",
    "get_program",
    "load_user_program",
]

StatsFn = Callable[..., dict[str, Tensor]]
ScoreFn = Callable[[dict[str, Tensor], OperatorSet], tuple[Tensor, Tensor | None]]


@dataclass(frozen=True)
class MetricProgram:
    """A metric defined once over an operator set.

    Attributes:
        name: short name, e.g. ``"miou"``.
        curves: names of the relaxation curves the program asks the operators for.
        stats: ``(ops, P, G, valid, **options) -> dict`` of additive sums.
        score: ``(stats, ops) -> (values, present)``.
        options: names of the keyword options ``stats`` accepts (``"tol"``, ``"drop_bg"``).
        description: one line for ``autoloss`` listings.
        monotone: whether the metric can only grow when pixels are corrected (region metrics);
            ``autoloss check`` tests the surrogate's monotonicity only for such programs. BF1 is
            not: correcting one pixel inside a wrong region adds predicted edges and can lower it.
        reference: the module:function a user program was loaded from (None for built-ins).
    """

    name: str
    curves: tuple[str, ...]
    stats: StatsFn
    score: ScoreFn
    options: tuple[str, ...] = ()
    description: str = ""
    monotone: bool = True
    reference: str | None = field(default=None, compare=False)

    def run_stats(self, ops: OperatorSet, P: Tensor, G: Tensor, valid: Tensor, *, tol: int = 5,
                  drop_bg: bool = False) -> dict[str, Tensor]:
        """Call ``stats`` with only the options this program declares: ``P`` (prediction:
        probabilities or one-hot) and ``G`` (one-hot ground truth) ``[N,C,H,W]``, ``valid``
        ``[N,1,H,W]`` (1 where the label is not ignored); returns named per-class sums
        (``[C]``, or ``[N,C]`` for per-image programs)."""
        given = {"tol": tol, "drop_bg": drop_bg}
        return self.stats(ops, P, G, valid, **{k: given[k] for k in self.options})


def class_mean(values: Tensor, present: Tensor | None, classes: str = "present") -> Tensor:
    """Reduce per-class ``values [C]`` (or ``[N,C]``) to a scalar per row.

    ``classes="present"`` averages over the ``present`` classes (0 if none is present),
    ``"all"`` over every class.
    """
    if present is None:
        return values
    if classes == "all":
        return values.mean(dim=-1)
    if classes != "present":
        raise InvalidValueError(f"classes must be 'present' or 'all', but got {classes=}")
    weights = present.to(values.dtype)
    kept = torch.where(present, values, torch.zeros_like(values))
    return kept.sum(dim=-1) / weights.sum(dim=-1).clamp_min(1)


# --------------------------------------------------------------------------- region metrics
def _region_stats(ops: OperatorSet, P: Tensor, G: Tensor, valid: Tensor) -> dict[str, Tensor]:
    return {
        "inter": total(ops.and_(P, G, ("inter", None)), valid),
        "union": total(ops.or_(P, G, ("union", None)), valid),
        "gt": total(G, valid),
        "pred": total(P, valid),
    }


def _iou_score(s: dict[str, Tensor], ops: OperatorSet) -> tuple[Tensor, Tensor]:
    """IoU_c = |P_c AND G_c| / |P_c OR G_c| (Jaccard index)."""
    return ops.ratio(s["inter"], s["union"]), ops.present(s["gt"], s["pred"])


def _fwiou_score(s: dict[str, Tensor], ops: OperatorSet) -> tuple[Tensor, None]:
    """FWIoU = sum_c freq_c * IoU_c with freq_c = n_c / sum n (textbook form)."""
    iou = ops.ratio(s["inter"], s["union"])
    freq = ops.count_ratio(s["gt"], s["gt"].sum())
    return (freq * iou).sum(), None


def _dice_score(s: dict[str, Tensor], ops: OperatorSet) -> tuple[Tensor, Tensor]:
    """Dice_c = 2 |P_c AND G_c| / (|P_c| + |G_c|) = 2 I / (I + U)."""
    return ops.ratio(2 * s["inter"], s["inter"] + s["union"]), ops.present(s["gt"], s["pred"])


def _acc_stats(ops: OperatorSet, P: Tensor, G: Tensor, valid: Tensor) -> dict[str, Tensor]:
    return {"hit": total(ops.and_(P, G, ("acc", None)), valid), "gt": total(G, valid)}


def _macc_score(s: dict[str, Tensor], ops: OperatorSet) -> tuple[Tensor, Tensor]:
    """Acc_c = |P_c AND G_c| / |G_c| (recall of class c)."""
    return ops.count_ratio(s["hit"], s["gt"]), s["gt"] > 0


def _gacc_score(s: dict[str, Tensor], ops: OperatorSet) -> tuple[Tensor, None]:
    """gAcc = sum_c |P_c AND G_c| / sum_c |G_c| (pixel accuracy)."""
    return ops.count_ratio(s["hit"].sum(), s["gt"].sum()), None


# ------------------------------------------------------------------------- per-image mIoU
def _miou_image_stats(ops: OperatorSet, P: Tensor, G: Tensor, valid: Tensor) -> dict[str, Tensor]:
    inter = total(ops.and_(P, G, ("inter", None)), valid, per_image=True)  # [N,C]
    union = total(ops.or_(P, G, ("union", None)), valid, per_image=True)
    present = ops.present(total(G, valid, per_image=True), total(P, valid, per_image=True))
    per_image = class_mean(ops.ratio(inter, union), present)  # [N]
    has_class = present.any(dim=1)
    return {
        "score_sum": torch.where(has_class, per_image, 0.0).sum(),
        "images": has_class.sum().to(per_image.dtype),
    }


def _miou_image_score(s: dict[str, Tensor], ops: OperatorSet) -> tuple[Tensor, None]:
    """Mean over images (with at least one class) of that image's mIoU."""
    return ops.count_ratio(s["score_sum"], s["images"]), None


# --------------------------------------------------------------------- boundary metrics
_EDGE_CURVES = ("edge_and_x", "edge_and_eroded", "edge_or_x", "edge_or_eroded")
def _trimap(G: Tensor, tol: int, drop_bg: bool) -> Tensor:
    """``[N,1,H,W]`` band of width ``tol`` around the ground-truth class boundaries (dilating
    the union of the class edges equals the union of the dilated edges, and is C times cheaper)."""
    edge = exact_edge(G)
    if drop_bg:
        edge = edge[:, 1:]
    if edge.shape[1] == 0:
        return torch.zeros_like(G[:, :1])
    return (dilate(edge.amax(dim=1, keepdim=True), tol) > 0.5).to(G.dtype)


def _biou_stats(ops: OperatorSet, P: Tensor, G: Tensor, valid: Tensor, *, tol: int,
                drop_bg: bool) -> dict[str, Tensor]:
    return _region_stats(ops, P, G, valid * _trimap(G, tol, drop_bg))


def _bf1_stats(ops: OperatorSet, P: Tensor, G: Tensor, valid: Tensor, *, tol: int,
               drop_bg: bool) -> dict[str, Tensor]:
    gt_edge = exact_edge(G)
    if drop_bg:  # class 0 then has no boundary, so it is left out of the mean
        gt_edge = torch.cat([torch.zeros_like(gt_edge[:, :1]), gt_edge[:, 1:]], dim=1)
    pred_edge = ops.edge(P, _EDGE_CURVES)
    return {
        "n_gt": total(gt_edge),
        "n_pred": total(pred_edge),
        "match_pred": total(pred_edge * dilate(gt_edge, tol)),
        "match_gt": total(ops.dilate(pred_edge, tol) * gt_edge),
    }


def _bf1_score(s: dict[str, Tensor], ops: OperatorSet) -> tuple[Tensor, Tensor]:
    """BF1_c = 2 P R / (P + R) with boundary precision P and recall R at tolerance ``tol``."""
    precision = ops.ratio(s["match_pred"], s["n_pred"])
    recall = ops.count_ratio(s["match_gt"], s["n_gt"])
    return ops.ratio(2 * precision * recall, precision + recall), s["n_gt"] > 0


_REGION_CURVES = ("inter", "union")

BUILTIN_PROGRAMS: dict[str, MetricProgram] = {
    "miou": MetricProgram("miou", _REGION_CURVES, _region_stats, _iou_score, (),
                          "mean intersection over union"),
    "fwiou": MetricProgram("fwiou", _REGION_CURVES, _region_stats, _fwiou_score, (),
                           "frequency-weighted IoU"),
    "mdice": MetricProgram("mdice", _REGION_CURVES, _region_stats, _dice_score, (),
                           "mean Dice (F1) score"),
    "macc": MetricProgram("macc", ("acc",), _acc_stats, _macc_score, (), "mean class accuracy"),
    "gacc": MetricProgram("gacc", ("acc",), _acc_stats, _gacc_score, (), "global pixel accuracy"),
    "miou_image": MetricProgram("miou_image", _REGION_CURVES, _miou_image_stats, _miou_image_score,
                                (), "per-image mIoU, averaged over images"),
    "biou": MetricProgram("biou", _REGION_CURVES, _biou_stats, _iou_score, ("tol", "drop_bg"),
                          "boundary IoU (IoU inside a band of width tol)"),
    "bf1": MetricProgram("bf1", _EDGE_CURVES, _bf1_stats, _bf1_score, ("tol", "drop_bg"),
                         "boundary F1 with tolerance tol", monotone=False),
}


def is_user_reference(name: str) -> bool:
    """Whether ``name`` names a user program (``path/to/file.py:attr``), not a built-in."""
    return ":" in name and name.rpartition(":")[0].endswith(".py")


def get_program(name: str | MetricProgram) -> MetricProgram:
    """Look up a built-in program by name, or load a user one given as ``path/to/file.py:attr``.

    Raises:
        ValueError: unknown name (with the closest known names).
    """
    if isinstance(name, MetricProgram):
        return name
    if is_user_reference(name):
        return load_user_program(name)
    try:
        return BUILTIN_PROGRAMS[name]
    except KeyError:
        raise InvalidValueError(
            f"unknown metric {name!r}: expected one of {sorted(BUILTIN_PROGRAMS)} or a user "
            f"program 'file.py:name'{did_you_mean(name, BUILTIN_PROGRAMS)}"
        ) from None


def load_user_program(reference: str) -> MetricProgram:
    """Load ``file.py:attr`` where ``attr`` is a :class:`MetricProgram` (or a function without
    arguments returning one) defined with the operator set in the user's own file.

    Runs the file, so only a trusted one (:mod:`autoloss.utils.trust`; else
    :class:`~autoloss.utils.trust.UntrustedCodeError`)."""
    from autoloss.utils.trust import import_reference

    obj = import_reference(reference, what="user metric")
    if callable(obj) and not isinstance(obj, MetricProgram):
        obj = obj()
    if not isinstance(obj, MetricProgram):
        raise InvalidTypeError(
            f"{reference!r} must be a MetricProgram (or a function returning one), "
            f"but got {type(obj).__name__}"
        )
    return dataclasses.replace(obj, reference=reference)
