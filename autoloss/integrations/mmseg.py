"""MMSegmentation: an autoloss loss in a decode head's ``loss_decode``.

mmseg builds a head's losses from config dicts and calls each as
``loss(cls_score, label, weight=None, ignore_index=255)``, keeping its value under the loss's
``loss_name`` (which must start with ``loss_`` to be trained on). :class:`MMSegLoss` has that
signature; :mod:`autoloss.integrations.mmseg_plugin` registers it in mmseg's model registry as
``AutolossLoss``, so a config names it like any mmseg loss::

    custom_imports = dict(imports=["autoloss.integrations.mmseg_plugin"],
                          allow_failed_imports=False)
    model = dict(decode_head=dict(loss_decode=[
        dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        dict(type="AutolossLoss", loss="searched_loss.yaml", loss_weight=1.0),
    ]))

This module does not import mmseg: the adapter is a plain ``nn.Module``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from autoloss.errors import InvalidTypeError, InvalidValueError
from autoloss.integrations.pipeline_loss import LossLike, build_loss, match_labels
from autoloss.losses import read_spec
from autoloss.losses._validate import check_ignore_index, check_number

__all__ = ["MMSegLoss"]

#: keyword arguments mmseg's losses receive that this adapter accepts at their neutral value
_NEUTRAL = {"avg_factor": (None,), "reduction_override": (None, "mean")}


class MMSegLoss(nn.Module):
    """An autoloss loss with mmseg's loss interface.

    Args:
        loss: a preset or baseline name, an exported loss file (YAML), a spec dict or a loss
            module (see :class:`~autoloss.integrations.PipelineLoss`).
        loss_weight: the factor mmseg's losses apply to their value.
        loss_name: the key of the value in mmseg's loss dict; must start with ``loss_`` (mmseg
            sums only those into the loss it trains on).
        trust_code: let a loss file's user metric (``metric: file.py:name``) run.

    ``forward(cls_score, label, weight=None, ignore_index=255, **kwargs)``:

    - ``cls_score``: logits ``[N,C,h,w]`` at any resolution (upsampled bilinearly to the
      labels, ``align_corners=False``, as mmseg's heads do);
    - ``label``: integer ``[N,H,W]`` or ``[N,1,H,W]``;
    - ``weight``: mmseg's per-pixel weights ``[N,H,W]`` (a pixel sampler's, e.g. OHEM). These
      losses are ratios of sums over the image, so a weight can only keep a pixel (1) or drop
      it (0: counted as ``ignore_index``); other values are an error;
    - ``ignore_index``: the head's void label; the loss is built for it (once per value);
    - ``avg_factor`` and ``reduction_override``: accepted at their neutral values (None,
      ``"mean"``); any other keyword is an error naming it.

    Returns ``loss_weight * loss``, a scalar.
    """

    def __init__(self, loss: LossLike, *, loss_weight: float = 1.0,
                 loss_name: str = "loss_autoloss", trust_code: bool = False) -> None:
        super().__init__()
        if not isinstance(loss_name, str) or not loss_name.startswith("loss_"):
            raise InvalidValueError(f"loss_name must be a str starting with 'loss_' (mmseg trains "
                                    f"only on those), but got {loss_name=!r}")
        if not isinstance(loss, nn.Module):
            read_spec(loss)  # a misspelt name or a missing file fails when mmseg builds the head
        self.spec = loss
        self.loss_weight = check_number("loss_weight", loss_weight, low=0.0)
        self._loss_name = loss_name
        self.trust_code = trust_code
        self.losses = nn.ModuleDict()  # str(ignore_index) -> the loss built for it

    @property
    def loss_name(self) -> str:
        """The key of this loss in mmseg's loss dict (starts with ``loss_``)."""
        return self._loss_name

    def loss_for(self, ignore_index: int | None) -> nn.Module:
        """The loss module for the void label ``ignore_index`` (built on first use)."""
        key = str(check_ignore_index(ignore_index))
        if key not in self.losses:
            self.losses[key] = build_loss(self.spec, ignore_index=ignore_index,
                                          trust_code=self.trust_code)
        return self.losses[key]

    def forward(self, cls_score: Tensor, label: Tensor, weight: Tensor | None = None,
                ignore_index: int | None = 255, **kwargs: Any) -> Tensor:
        for key, value in kwargs.items():
            if key not in _NEUTRAL:
                raise InvalidValueError(f"MMSegLoss got an unexpected keyword argument {key!r}; "
                                        f"it takes weight, ignore_index, avg_factor and "
                                        f"reduction_override")
            if not any(value is v or value == v for v in _NEUTRAL[key]):
                raise InvalidValueError(
                    f"MMSegLoss cannot honour {key}={value!r}: its losses are means over the "
                    f"batch's pixels or classes (accepted: {key}={_NEUTRAL[key][0]!r})")
        logits, label = match_labels(cls_score, label)
        if weight is not None:
            label = _drop_weighted_out(label, weight, ignore_index)
        loss = self.loss_for(ignore_index).to(logits.device)
        return self.loss_weight * loss(logits, label)

    def extra_repr(self) -> str:
        return f"loss={self.spec!r}, loss_weight={self.loss_weight}, loss_name={self._loss_name!r}"


def _drop_weighted_out(label: Tensor, weight: Tensor, ignore_index: int | None) -> Tensor:
    """``label`` with the pixels of weight 0 set to ``ignore_index`` (weights must be 0 or 1)."""
    if not isinstance(weight, Tensor):
        raise InvalidTypeError(f"weight must be a tensor [N,H,W] or None, but got "
                               f"{type(weight).__name__}")
    if weight.dim() == label.dim() + 1 and weight.shape[1] == 1:
        weight = weight[:, 0]
    if tuple(weight.shape) != tuple(label.shape):
        raise InvalidValueError(f"weight must be per pixel, {tuple(label.shape)} like the label, "
                                f"but got weight shape {tuple(weight.shape)}")
    if bool(((weight != 0) & (weight != 1)).any()):
        shown = torch.unique(weight[(weight != 0) & (weight != 1)])[:3].tolist()
        raise InvalidValueError(
            f"per-pixel weights other than 0 and 1 (got {shown}) are not supported: autoloss's "
            f"losses are ratios of sums over the image, where a weight can only keep a pixel (1) "
            f"or drop it (0); use a sampler that selects pixels (OHEM) or none")
    if not bool((weight == 0).any()):
        return label
    if ignore_index is None:
        raise InvalidValueError("weight drops pixels (zeros), which needs an ignore_index to mark "
                                "them, but got ignore_index=None")
    return torch.where(weight == 0, torch.full_like(label, ignore_index), label)
