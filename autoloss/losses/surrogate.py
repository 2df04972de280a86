"""``SurrogateLoss``: a metric program run with relaxed operators, as a loss.

    loss = 1 - surrogate(metric)

The surrogate is the same program that computes the exact metric (``autoloss.core.programs``), with
the prediction replaced by softmax probabilities and the logical operators by parameterised
smooth ones (Li et al., "Auto Seg-Loss: Searching Metric Surrogates for Semantic Segmentation",
ICLR 2021). Each curve ``h`` is monotone with ``h(0)=0`` and ``h(1)=1`` (``autoloss.core.relaxations``),
so the surrogate equals the metric on one-hot predictions and never decreases as the prediction
moves toward the ground truth.

Conventions (defaults) and the Auto Seg-Loss reference conventions (used by the ``asl-*`` presets):

- ``classes="present"`` averages per-class values over the classes present in the batch's ground
  truth; ``"all"`` over every class (absent classes then count as 0, as the reference does for
  mIoU, mAcc and BIoU).
- Pixels whose label is ``ignore_index`` count nowhere, except in BF1, which (like the exact
  metric and the reference) uses every pixel.
- Soft labels ``[N,C,H,W]`` (rows summing to 1) are accepted: the relaxed ``AND(p, g) =
  h(p) * g`` and ``OR(p, g) = h(p) + g - h(p) g`` take ``g`` as given, which leaves hard labels
  unaffected; boundary metrics then use the soft ground-truth edge map.
- ``sync="global"``: the program's statistics (additive per-class sums) are summed over the
  processes of ``torch.distributed`` before the score, eager and compiled alike, so under DDP
  every rank computes the full batch's loss (:mod:`autoloss.losses._global` states the gradient
  scaling). ``resize="bilinear"`` upsamples logits at the decoder's resolution to the labels'.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import autoloss.losses.compiled as compiled
from autoloss.core.metrics import check_tol
from autoloss.core.operators import RelaxedOps, one_hot
from autoloss.core.programs import MetricProgram, class_mean, get_program
from autoloss.core.relaxations import Curve, IdentityCurve, curve_from_dict
from autoloss.errors import InvalidValueError
from autoloss.losses._global import Processes, Sync, check_sync, processes, sync_entry
from autoloss.losses._precision import float32_compute
from autoloss.losses._validate import (
    check_choice,
    check_logits_and_target,
    check_resize,
    resize_entry,
    resize_logits,
    squeeze_label_channel,
)
from autoloss.losses.binary import apply_mode, check_mode, mode_entry

__all__ = ["SurrogateLoss", "surrogate_loss"]


@float32_compute
def surrogate_loss(logits: Tensor, target: Tensor, *, program: MetricProgram,
                   curves: Mapping[str, Curve], ignore_index: int | None = None, tol: int = 5,
                   drop_bg: bool = False, classes: str = "present", eps: float = 1e-8,
                   float32_dilation: bool = False, compile: bool | str = False,
                   resize: str | None = None, sync: Sync = "local") -> Tensor:
    """``1 - surrogate`` of ``program`` for ``logits [N,C,H,W]`` and ``target`` (hard ``[N,H,W]``
    long labels or soft ``[N,C,H,W]`` probabilities). Returns a scalar; an all-ignored batch gives
    0 with zero gradient. ``compile``: run the per-class sums as a compiled graph (True, False or
    ``"auto"``; see :mod:`autoloss.losses.compiled`, which also says which calls are eligible).
    ``resize="bilinear"``: upsample the logits to the labels' size first. ``sync="global"``: sum
    the statistics over the processes of ``torch.distributed`` (module docstring)."""
    logits = resize_logits(logits, target, check_resize(resize))
    target = squeeze_label_channel(logits, target)
    mode = check_logits_and_target(logits, target, ignore_index=ignore_index, allow_soft=True,
                                   volumes=True)
    world = processes(check_sync(sync))
    key = compiled.graph_key(program, curves, logits, target, mode=mode, tol=tol,
                             drop_bg=drop_bg, eps=eps, float32_dilation=float32_dilation)
    result = None
    if compiled.wants_compile(compile, key):
        result = compiled.compiled_stats(key, logits, target, ignore_index=ignore_index,
                                         curves=curves)
    if result is None:
        started = time.perf_counter()
        result = _eager_stats(logits, target, mode, program=program, curves=curves,
                              ignore_index=ignore_index, tol=tol, drop_bg=drop_bg, eps=eps,
                              float32_dilation=float32_dilation, world=world is not None)
        if compile == "auto":
            compiled.note_eager(key, time.perf_counter() - started)
    if result is None:
        return logits.sum() * 0.0
    stats, any_valid = result
    if world:
        stats, any_valid = _global_stats(program, stats, any_valid, world)
    if not bool(any_valid):
        return logits.sum() * 0.0
    ops = RelaxedOps(curves, eps=eps, float32_dilation=float32_dilation)
    values, present = program.score(stats, ops)
    return 1.0 - class_mean(values, present, classes)


def _global_stats(program: MetricProgram, stats: dict[str, Tensor], any_valid: Tensor,
                  world: Processes) -> tuple[dict[str, Tensor], Tensor]:
    """The statistics summed over the processes (with autograd), and whether any has a valid
    pixel."""
    names = sorted(stats)
    batched = [name for name in names if stats[name].dim() > 1]
    if batched:
        raise InvalidValueError(
            f"sync='global' sums the statistics of metric {program.name!r} over processes, so "
            f"they must be summed over the batch ([C] or scalars), but {batched} have shapes "
            f"{[tuple(stats[name].shape) for name in batched]}"
        )
    flag = any_valid.to(stats[names[0]].dtype) if names else any_valid.double()
    *summed, count = world.sums(*[stats[name] for name in names], flag)
    return dict(zip(names, summed)), count > 0


def _eager_stats(logits: Tensor, target: Tensor, mode: str, *, program: MetricProgram,
                 curves: Mapping[str, Curve], ignore_index: int | None, tol: int, drop_bg: bool,
                 eps: float, float32_dilation: bool,
                 world: bool) -> tuple[dict[str, Tensor], Tensor] | None:
    """The program's statistics with the eager kernels (inputs already checked) and whether a
    pixel is valid; None for a batch without valid pixels (unless ``world``: a rank still takes
    part in the all-reduce)."""
    probs = torch.softmax(logits, dim=1)
    num_classes = logits.shape[1]
    if mode == "hard":
        valid = (target >= 0) & (target < num_classes)
        if ignore_index is not None:
            valid &= target != ignore_index
        any_valid = valid.any()
        if not world and not bool(any_valid):
            return None
        gt = one_hot(target, num_classes, valid=valid, dtype=logits.dtype)
        mask = valid.unsqueeze(1).to(logits.dtype)
    else:
        gt = target.to(logits.dtype)
        mask = torch.ones_like(gt[:, :1])
        any_valid = torch.tensor(mask.numel() > 0, device=logits.device)
    ops = RelaxedOps(curves, eps=eps, float32_dilation=float32_dilation)
    return program.run_stats(ops, probs, gt, mask, tol=tol, drop_bg=drop_bg), any_valid


class SurrogateLoss(nn.Module):
    """Loss ``1 - surrogate(metric)`` for logits ``[N,C,H,W]`` and labels ``[N,H,W]`` (or 3-D
    volumes ``[N,C,D,H,W]`` and ``[N,D,H,W]``: boundaries with cube neighbourhoods, eager only).

    Args:
        metric: a built-in metric name (``miou``, ``fwiou``, ``macc``, ``gacc``, ``mdice``,
            ``biou``, ``bf1``, ``miou_image``), a user program ``file.py:name`` or a
            :class:`~autoloss.core.programs.MetricProgram`.
        curves: curve name -> :class:`~autoloss.core.relaxations.Curve` (or its dict form). Curves the
            program uses but that are not given are the identity (the plain soft metric).
        ignore_index: label excluded from the loss (the void label of *your* data: a loss file
            carries none, see ``load_loss``). tol: boundary tolerance in pixels.
        tol_at: ``(H, W)``: ``tol`` is in pixels at images of this size and scales with the image
            diagonal elsewhere (``round(tol * diag(input) / diag(tol_at))``), so that a loss
            searched at one resolution means the same at another. None: ``tol`` pixels always.
        drop_bg: leave class 0's boundaries out (BIoU band, BF1 mean).
        mode: ``"multiclass"`` (logits ``[N,C,H,W]``), ``"binary"`` (one foreground logit
            ``[N,1,H,W]``) or ``"multilabel"`` (``[N,L,H,W]``, one sigmoid per label, targets
            ``[N,L,H,W]`` of 0/1; the mean over labels); :mod:`autoloss.losses.binary`.
        classes: ``"present"`` or ``"all"`` (see the module docstring).
        eps: added to prediction-dependent denominators.
        float32_dilation: dilate predicted edges in float32 (bit-level parity with the reference).
        compile: run forward and backward as one ``torch.compile`` graph (:mod:`autoloss.losses.
            compiled`): ``True``, ``False`` (the eager kernel) or ``"auto"`` (default: eager
            until the eager forward passes of one shape have taken
            :data:`~autoloss.losses.compiled.AUTO_AFTER` seconds in the process, about what
            a cold compilation costs, then compiled; so a one-off call never waits for the
            compiler, and a long training loop compiles early; the proxy compiles from the
            first step). ``AUTOLOSS_COMPILE=0`` forces eager. A runtime
            choice (attribute ``compile_option``), not part of :meth:`to_dict`: loss files
            stay torch-only.
        resize: ``"bilinear"``: upsample logits at the decoder's resolution ``[N,C,h,w]`` to the
            labels' ``H x W`` (``align_corners=False``, the mmseg / Hugging Face convention);
            ``tol`` then applies at the labels' size.
        sync: ``"global"``: sum the statistics over the processes of ``torch.distributed``
            (DDP), or a process group: over its processes; see :mod:`autoloss.losses._global`.

    Example:
        >>> loss = SurrogateLoss("miou")
        >>> logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> target = torch.randint(0, 3, (2, 8, 8))
        >>> loss(logits, target).backward()
    """

    def __init__(self, metric: str | MetricProgram, *,
                 curves: Mapping[str, Curve | Mapping[str, Any]] | None = None,
                 ignore_index: int | None = None, tol: int = 5, drop_bg: bool = False,
                 classes: str = "present", eps: float = 1e-8,
                 float32_dilation: bool = False, tol_at: Sequence[int] | None = None,
                 mode: str = "multiclass", compile: bool | str = "auto",
                 resize: str | None = None, sync: Sync = "local") -> None:
        super().__init__()
        self.resize = check_resize(resize)
        self.sync = check_sync(sync)
        self.compile_option = compiled.check_compile_option(compile)  # nn.Module has compile()
        self.mode = check_mode(mode)
        self.program = get_program(metric)
        self.metric = metric if isinstance(metric, str) else (self.program.reference or
                                                               self.program.name)
        given = dict(curves or {})
        unknown = sorted(set(given) - set(self.program.curves))
        if unknown:
            raise InvalidValueError(
                f"curves {unknown} are not used by metric {self.program.name!r}, which uses "
                f"{list(self.program.curves)}"
            )
        self.curves: dict[str, Curve] = {}
        for name in self.program.curves:
            curve = given.get(name, IdentityCurve())
            try:
                self.curves[name] = (curve_from_dict(curve) if isinstance(curve, Mapping)
                                     else curve)
            except InvalidValueError as err:  # say which curve of the metric
                raise InvalidValueError(f"curves.{name}: {err}") from None
        if ignore_index is not None and not isinstance(ignore_index, int):
            raise InvalidValueError(f"ignore_index must be an int or None, but got {ignore_index=}")
        check_tol(tol)
        if tol_at is not None:
            if (isinstance(tol_at, (str, bytes)) or len(tol_at) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                               for v in tol_at)):
                raise InvalidValueError(f"tol_at must be (height, width) with positive ints or None, "
                                 f"but got {tol_at=}")
            tol_at = (int(tol_at[0]), int(tol_at[1]))
        check_choice("classes", classes, ("present", "all"))
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise InvalidValueError(f"eps must be a positive number, but got {eps=}")
        self.ignore_index = ignore_index
        self.tol = tol
        self.tol_at = tol_at
        self._warned_ignore = False
        self.drop_bg = bool(drop_bg)
        self.classes = classes
        self.eps = float(eps)
        self.float32_dilation = bool(float32_dilation)

    def tol_for(self, height: int, width: int) -> int:
        """The boundary tolerance in pixels for images of ``height x width``."""
        if self.tol_at is None:
            return self.tol
        return int(round(self.tol * math.hypot(height, width) / math.hypot(*self.tol_at)))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [N, C, H, W]`` (``[N, 1, H, W]`` with ``mode="binary"``), ``target [N, H, W]``
        long -> ``1 - surrogate metric``: a scalar."""
        return apply_mode(self.mode, self._loss, logits, target)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        num_classes = logits.shape[1] if logits.dim() >= 4 else None
        if (not self._warned_ignore and num_classes is not None and self.ignore_index is not None
                and 0 <= self.ignore_index < num_classes):
            self._warned_ignore = True
            warnings.warn(
                f"ignore_index={self.ignore_index} is one of the C={num_classes} classes of these "
                f"logits: class {self.ignore_index} gets no gradient from this loss. If it was the "
                f"void label of the dataset a loss file was searched on, pass your data's: "
                f"load_loss(path, ignore_index=<your void label, or None>)", stacklevel=2)
        return surrogate_loss(
            logits, target, program=self.program, curves=self.curves,
            ignore_index=self.ignore_index, tol=self.tol_for(*self._image_size(logits, target)),
            drop_bg=self.drop_bg,
            classes=self.classes, eps=self.eps, float32_dilation=self.float32_dilation,
            compile=self.compile_option, resize=self.resize, sync=self.sync,
        )

    def _image_size(self, logits: Tensor, target: Tensor) -> tuple[int, int]:
        """The size the loss sees: the labels' with ``resize``, else the logits'."""
        source = target if self.resize is not None and target.dim() >= 3 else logits
        return int(source.shape[-2]), int(source.shape[-1])

    def to_dict(self) -> dict[str, Any]:
        """The loss spec (see ``autoloss.losses.load_loss``); round-trips exactly."""
        return {
            "name": "surrogate",
            "metric": self.metric,
            "ignore_index": self.ignore_index,
            "tol": self.tol,
            "drop_bg": self.drop_bg,
            "classes": self.classes,
            "eps": self.eps,
            "float32_dilation": self.float32_dilation,
            **({"tol_at": list(self.tol_at)} if self.tol_at is not None else {}),
            **mode_entry(self.mode),
            **resize_entry(self.resize),
            **sync_entry(self.sync),
            "curves": {name: curve.to_dict() for name, curve in self.curves.items()},
        }

    def extra_repr(self) -> str:
        kinds = ", ".join(f"{n}={c.kind}" for n, c in self.curves.items())
        return f"metric={self.metric!r}, classes={self.classes!r}, curves=({kinds})"
