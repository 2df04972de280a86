"""Region Mutual Information loss (Zhao, Huang, Wang, Cai, "Region Mutual Information Loss for
Semantic Segmentation", NeurIPS 2019; reference: ZJULearning/RMI, ``forward_sigmoid``).

For logits ``x [N,C,H,W]`` and labels ``y [N,H,W]`` (labels ``>= C`` and ``ignore_index`` are
ignored; ``v`` marks the other pixels, ``q`` is the one-hot label, 0 at ignored pixels)::

    bce  = sum_{valid i, c} BCEWithLogits(x_ic, q_ic) / (N_valid + 1)
    p    = sigmoid(x) * v + 1e-6
    q, p <- pool(q), pool(p)        kernel = stride = pool_size, padding = pool_size // 2
                                    ("max", "avg" counting the padding, or "resize": nearest for
                                    q, bilinear with align_corners for p, to (H // s, W // s));
                                    skipped when pool_stride == 1
    Y, P = the r x r neighbourhoods (d = r^2 rows, row-major offsets) at the n valid positions,
           per image and class, in float64, centred over n
    M    = Y Y^T - (Y P^T) (P P^T + 5e-4 I)^-1 (Y P^T)^T          (scatter matrices, not / n)
    rmi  = sum_c mean_b [ 1/2 log det(M + 5e-4 I) ] / d           (log det = 2 sum log(diag(L) + 1e-8),
                                                                    L the Cholesky factor)
    loss = lambda bce + (1 - lambda) rmi   ("convex", reference lambda_way=1)
         | bce + lambda rmi                ("additive", lambda_way=0)

The RMI term is an upper bound on a conditional entropy and can be negative. Like the reference,
the per-class vector is cast to float32 before the sum and the loss is float32
(``output_dtype="float32"``); ``output_dtype="input"`` keeps float64 to the end and returns the
logits' dtype (use it for ``gradcheck``). Solves use Cholesky factors (``cholesky_ex``; a factor
that fails gets more jitter, so constant predictions and single-class batches are safe).

Two default sets (``RMI_PRESETS``, ``RMILoss.class_defaults()``, ``RMILoss.train_defaults()``):

- ``class_defaults`` (the reference ``RMILoss.__init__``): radius 3, max pooling, size = stride = 3,
  lambda 0.5, convex;
- ``train_defaults`` (the reference ``parser_params.py``, used for its training runs): radius 3,
  average pooling, size = stride = 2, lambda 0.5, convex.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoloss.errors import InvalidValueError
from autoloss.losses._precision import float32_compute
from autoloss.losses._validate import (
    check_choice,
    check_ignore_index,
    check_logits_and_target,
    check_number,
    check_resize,
    empty_batch,
    resize_entry,
    resize_logits,
    squeeze_label_channel,
)

__all__ = ["RMI_PRESETS", "RMILoss", "rmi_loss", "rmi_lower_bound"]

_CLIP_MIN = 1e-6  # added to the probabilities
_POS_ALPHA = 5e-4  # jitter on both matrices
_LOG_EPS = 1e-8  # inside the log of the Cholesky diagonal
_CHUNK_ELEMENTS = 2**20  # window entries per chunk of (image, class) pairs
_POOLS = ("max", "avg", "resize")
_LAMBDA_WAYS = ("convex", "additive")
_OUTPUT_DTYPES = ("float32", "input")

RMI_PRESETS: dict[str, dict[str, Any]] = {
    "class_defaults": {"radius": 3, "pool": "max", "pool_size": 3, "pool_stride": 3,
                       "weight_lambda": 0.5, "lambda_way": "convex"},
    "train_defaults": {"radius": 3, "pool": "avg", "pool_size": 2, "pool_stride": 2,
                       "weight_lambda": 0.5, "lambda_way": "convex"},
}


def _check_options(*, radius: int, pool: str, pool_size: int, pool_stride: int,
                   weight_lambda: float, lambda_way: str, output_dtype: str) -> None:
    check_number("radius", radius, low=1, integer=True)
    check_choice("pool", pool, _POOLS)
    check_number("pool_size", pool_size, low=1, integer=True)
    check_number("pool_stride", pool_stride, low=1, integer=True)
    check_number("weight_lambda", weight_lambda, low=0.0)
    check_choice("lambda_way", lambda_way, _LAMBDA_WAYS)
    check_choice("output_dtype", output_dtype, _OUTPUT_DTYPES)


def _downsample(q: Tensor, p: Tensor, *, pool: str, size: int, stride: int) -> tuple[Tensor,
                                                                                     Tensor]:
    if stride == 1:
        return q, p
    if pool == "max":
        return (F.max_pool2d(q, size, stride=stride, padding=size // 2),
                F.max_pool2d(p, size, stride=stride, padding=size // 2))
    if pool == "avg":
        return (F.avg_pool2d(q, size, stride=stride, padding=size // 2),
                F.avg_pool2d(p, size, stride=stride, padding=size // 2))
    new_size = (q.shape[2] // stride, q.shape[3] // stride)
    return (F.interpolate(q, size=new_size, mode="nearest"),
            F.interpolate(p, size=new_size, mode="bilinear", align_corners=True))


def _cholesky(matrix: Tensor) -> Tensor:
    """Cholesky factor of symmetric PD ``[..., d, d]``; on failure, retry with growing jitter."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    jitter = _POS_ALPHA
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    while bool((info > 0).any()):
        if jitter > 1e6:
            raise RuntimeError("RMI: Cholesky failed even with large jitter (non-finite input?)")
        matrix = matrix + jitter * eye
        jitter *= 10.0
        factor, info = torch.linalg.cholesky_ex(matrix)
    return factor


def _neighbourhoods(x: Tensor, radius: int) -> Tensor:
    """``[N,C,H,W] -> [N,C,r*r,n]``: the ``r x r`` windows at the ``n`` valid positions, offsets
    row-major (dy outer, dx inner)."""
    n, c, h, w = x.shape
    h_out, w_out = h - radius + 1, w - radius + 1
    windows = [x[:, :, dy:dy + h_out, dx:dx + w_out] for dy in range(radius)
               for dx in range(radius)]
    return torch.stack(windows, dim=2).reshape(n, c, radius * radius, h_out * w_out)


def _half_log_det(q: Tensor, p: Tensor, radius: int) -> Tensor:
    """``1/2 log det(M + 5e-4 I)`` for each row of ``q, p [R,1,H,W]`` (float64), ``[R]``."""
    d = radius * radius
    y_vec = _neighbourhoods(q.double(), radius)
    p_vec = _neighbourhoods(p.double(), radius)
    y_vec = y_vec - y_vec.mean(dim=3, keepdim=True)
    p_vec = p_vec - p_vec.mean(dim=3, keepdim=True)
    eye = torch.eye(d, dtype=torch.float64, device=q.device)
    sigma_y = y_vec @ y_vec.transpose(2, 3)
    sigma_yp = y_vec @ p_vec.transpose(2, 3)
    chol_p = _cholesky(p_vec @ p_vec.transpose(2, 3) + _POS_ALPHA * eye)
    # (Y P^T)(P P^T + aI)^-1 (Y P^T)^T = Z^T Z with Z = L_P^-1 (Y P^T)^T
    z = torch.linalg.solve_triangular(chol_p, sigma_yp.transpose(2, 3), upper=False)
    cond = sigma_y - z.transpose(2, 3) @ z
    cond = 0.5 * (cond + cond.transpose(2, 3)) + _POS_ALPHA * eye
    chol = _cholesky(cond)
    # 1/2 log det = 1/2 * 2 sum log(diag(L) + 1e-8)
    return torch.log(torch.diagonal(chol, dim1=-2, dim2=-1) + _LOG_EPS).sum(dim=-1).flatten()


def rmi_lower_bound(labels: Tensor, probs: Tensor, *, radius: int = 3, pool: str = "max",
                    pool_size: int = 3, pool_stride: int = 3,
                    float32_classes: bool = True) -> Tensor:
    """The RMI term ``sum_c mean_b 1/2 log det(M + 5e-4 I) / d`` (see the module docstring).

    Args:
        labels: ``[N,C,H,W]`` one-hot labels (0 at ignored pixels).
        probs: ``[N,C,H,W]`` probabilities (``sigmoid(x) * v + 1e-6`` in the loss).
        float32_classes: cast the per-class vector to float32 before the sum (the reference).

    Returns:
        a scalar (float32 with ``float32_classes``, else float64).
    """
    q, p = _downsample(labels, probs, pool=pool, size=pool_size, stride=pool_stride)
    n, c, h, w = q.shape
    if h < radius or w < radius:
        raise InvalidValueError(
            f"RMI needs a pooled size >= radius={radius}, but the input {tuple(labels.shape[2:])} "
            f"pools to {(h, w)} (pool_stride={pool_stride})"
        )
    # (image, class) pairs in chunks keep the float64 temporaries small (faster allocation)
    step = max(1, _CHUNK_ELEMENTS // (radius * radius * (h - radius + 1) * (w - radius + 1)))
    q_rows, p_rows = q.reshape(n * c, 1, h, w), p.reshape(n * c, 1, h, w)
    rmi_bc = torch.cat([_half_log_det(q_rows[i:i + step], p_rows[i:i + step], radius)
                        for i in range(0, n * c, step)]).view(n, c)
    per_class = rmi_bc.mean(dim=0)
    if float32_classes:
        per_class = per_class.float()
    return (per_class / float(radius * radius)).sum()


@float32_compute
def rmi_loss(logits: Tensor, target: Tensor, *, radius: int = 3, pool: str = "max",
             pool_size: int = 3, pool_stride: int = 3, weight_lambda: float = 0.5,
             lambda_way: str = "convex", ignore_index: int | None = None,
             output_dtype: str = "float32", resize: str | None = None) -> Tensor:
    """RMI loss with its sigmoid BCE part (see the module docstring; defaults: class_defaults).

    Args:
        logits: ``[N,C,H,W]`` raw scores (sigmoid per class is applied here).
        target: ``[N,H,W]`` integer labels; values ``>= C`` and ``ignore_index`` are ignored.
        radius: neighbourhood side ``r`` (``d = r^2``).
        pool: ``"max"``, ``"avg"`` or ``"resize"`` downsampling before the RMI term.
        pool_size, pool_stride: downsampling kernel and stride (no downsampling if stride 1).
        weight_lambda: ``lambda`` in the combination with the BCE part.
        lambda_way: ``"convex"`` (``lambda bce + (1-lambda) rmi``) or ``"additive"``
            (``bce + lambda rmi``).
        ignore_index: an extra ignored label value (for instance a negative one), or None.
        output_dtype: ``"float32"`` (the reference) or ``"input"`` (no float32 cast).
        resize: ``"bilinear"``: upsample logits at the decoder's resolution to the labels'
            ``H x W`` first (``align_corners=False``).

    Returns:
        a scalar; 0 (with zero gradients) when every pixel is ignored.
    """
    _check_options(radius=radius, pool=pool, pool_size=pool_size, pool_stride=pool_stride,
                   weight_lambda=weight_lambda, lambda_way=lambda_way, output_dtype=output_dtype)
    logits = resize_logits(logits, target, check_resize(resize))
    target = squeeze_label_channel(logits, target)
    check_logits_and_target(logits, target, ignore_index=ignore_index, allow_soft=False,
                            high_labels_ignored=True, loss="rmi (2-D neighbourhoods)")
    if (empty := empty_batch(logits)) is not None:
        return empty
    num_classes = logits.shape[1]
    labels = target.long()
    valid = labels < num_classes
    if ignore_index is not None:
        valid &= labels != ignore_index
    if not bool(valid.any()):  # nothing to learn from: 0, like every other loss
        zero = logits.sum() * 0.0
        return zero.float() if output_dtype == "float32" else zero
    mask = valid.unsqueeze(1).to(logits.dtype)
    onehot = F.one_hot(torch.where(valid, labels, 0), num_classes).permute(0, 3, 1, 2)
    onehot = onehot.to(logits.dtype) * mask
    bce_sum = (F.binary_cross_entropy_with_logits(logits, onehot, reduction="none") * mask).sum()
    bce = bce_sum / (mask.sum() + 1.0)
    probs = torch.sigmoid(logits) * mask + _CLIP_MIN
    rmi = rmi_lower_bound(onehot, probs, radius=radius, pool=pool, pool_size=pool_size,
                          pool_stride=pool_stride, float32_classes=output_dtype == "float32")
    bce = bce.to(rmi.dtype)
    if lambda_way == "convex":
        loss = weight_lambda * bce + (1.0 - weight_lambda) * rmi
    else:
        loss = bce + weight_lambda * rmi
    return loss.float() if output_dtype == "float32" else loss.to(logits.dtype)


class RMILoss(nn.Module):
    """Module form of :func:`rmi_loss`; ``RMILoss.class_defaults()`` and
    ``RMILoss.train_defaults()`` build the two reference default sets.

    Example:
        >>> loss = RMILoss.train_defaults(ignore_index=255)
        >>> loss(torch.randn(2, 3, 24, 24), torch.randint(0, 3, (2, 24, 24))).shape  # a scalar
        torch.Size([])
    """

    name: ClassVar[str] = "rmi"

    def __init__(self, *, radius: int = 3, pool: str = "max", pool_size: int = 3,
                 pool_stride: int = 3, weight_lambda: float = 0.5, lambda_way: str = "convex",
                 ignore_index: int | None = None, output_dtype: str = "float32",
                 resize: str | None = None) -> None:
        super().__init__()
        self.resize = check_resize(resize)
        _check_options(radius=radius, pool=pool, pool_size=pool_size, pool_stride=pool_stride,
                       weight_lambda=weight_lambda, lambda_way=lambda_way,
                       output_dtype=output_dtype)
        self.radius = int(radius)
        self.pool = pool
        self.pool_size = int(pool_size)
        self.pool_stride = int(pool_stride)
        self.weight_lambda = float(weight_lambda)
        self.lambda_way = lambda_way
        self.ignore_index = check_ignore_index(ignore_index)
        self.output_dtype = output_dtype

    @classmethod
    def class_defaults(cls, *, ignore_index: int | None = None,
                       output_dtype: str = "float32") -> RMILoss:
        """The reference ``RMILoss.__init__`` defaults (max pooling 3x3, stride 3)."""
        return cls(**RMI_PRESETS["class_defaults"], ignore_index=ignore_index,
                   output_dtype=output_dtype)

    @classmethod
    def train_defaults(cls, *, ignore_index: int | None = None,
                       output_dtype: str = "float32") -> RMILoss:
        """The reference training defaults (``parser_params.py``: avg pooling 2x2, stride 2)."""
        return cls(**RMI_PRESETS["train_defaults"], ignore_index=ignore_index,
                   output_dtype=output_dtype)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [N, C, H, W]``, ``target [N, H, W]`` long -> :func:`rmi_loss`: a scalar."""
        return rmi_loss(logits, target, radius=self.radius, pool=self.pool,
                        pool_size=self.pool_size, pool_stride=self.pool_stride,
                        weight_lambda=self.weight_lambda, lambda_way=self.lambda_way,
                        ignore_index=self.ignore_index, output_dtype=self.output_dtype,
                        resize=self.resize)

    def to_dict(self) -> dict[str, Any]:
        """The loss spec ``{"name": ..., **options}``; ``RMILoss(**options)`` rebuilds it."""
        return {"name": self.name, "radius": self.radius, "pool": self.pool,
                "pool_size": self.pool_size, "pool_stride": self.pool_stride,
                "weight_lambda": self.weight_lambda, "lambda_way": self.lambda_way,
                "ignore_index": self.ignore_index, "output_dtype": self.output_dtype,
                **resize_entry(self.resize)}
