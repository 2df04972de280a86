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

Implementation (2-4x faster than the reference on CPU, ``benchmarks/lovasz_rmi_vs_reference.py``):
with max or average pooling the full-size work is one autograd Function (the BCE as softplus
sums minus the label's logit, the pooled sigmoid in channels-last layout, and a backward pass
that adds the pooling's gradient only at the pooled maxima), the pooled one-hot comes from
per-window label counts when windows do not overlap, the scatter matrices of all three pairs come
from one batched product of the stacked neighbourhoods (one more in the backward pass), and an
(image, class) pair whose pooled labels are constant is not computed: centred, its ``Y`` is 0, so
its term is the constant ``1/2 log det(5e-4 I)`` and has no gradient.

Two default sets (``RMI_PRESETS``, ``RMILoss.class_defaults()``, ``RMILoss.train_defaults()``):

- ``class_defaults`` (the reference ``RMILoss.__init__``): radius 3, max pooling, size = stride = 3,
  lambda 0.5, convex;
- ``train_defaults`` (the reference ``parser_params.py``, used for its training runs): radius 3,
  average pooling, size = stride = 2, lambda 0.5, convex.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

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


class _Scatters(torch.autograd.Function):
    """The scatter matrices ``Y Y^T, Y P^T, P P^T`` (``[R,d,d]`` each, float64) of the centred
    ``r x r`` neighbourhoods of ``q`` (no gradient) and ``p``, ``[R,1,h,w]``: ``Y, P [R,d,n]``
    hold the windows at the ``n`` valid positions (offsets row-major, dy outer, dx inner; each
    offset one strided copy into a float64 buffer), centred over the positions. Backward is one
    batched product: ``dP = [dYP^T | dPP + dPP^T] [Y; P]``, centred, then added back onto the
    pixels offset by offset."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, p: Tensor, radius: int) -> tuple[Tensor, Tensor, Tensor]:
        rows, _, h, w = p.shape
        d, h_out, w_out = radius * radius, h - radius + 1, w - radius + 1
        vectors = torch.empty(rows, 2 * d, h_out, w_out, dtype=torch.float64, device=p.device)
        for k in range(d):
            dy, dx = divmod(k, radius)
            vectors[:, k].copy_(q[:, 0, dy:dy + h_out, dx:dx + w_out])
            vectors[:, d + k].copy_(p[:, 0, dy:dy + h_out, dx:dx + w_out])
        vectors = vectors.view(rows, 2 * d, h_out * w_out)
        vectors -= vectors.mean(dim=2, keepdim=True)
        y_vec, p_vec = vectors[:, :d], vectors[:, d:]
        with_p = torch.bmm(vectors, p_vec.transpose(1, 2))  # [Y P^T; P P^T]
        ctx.save_for_backward(vectors)
        ctx.input = (p.shape, p.dtype, radius)
        return torch.bmm(y_vec, y_vec.transpose(1, 2)), with_p[:, :d], with_p[:, d:]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Tensor, grad_yp: Tensor,
                 grad_p: Tensor) -> tuple[Tensor | None, ...]:
        (vectors,) = ctx.saved_tensors
        (rows, _, h, w), dtype, radius = ctx.input
        d, h_out, w_out = radius * radius, h - radius + 1, w - radius + 1
        coefficients = torch.cat([grad_yp.transpose(1, 2), grad_p + grad_p.transpose(1, 2)],
                                 dim=2)
        grad_vectors = torch.bmm(coefficients, vectors)
        grad_vectors -= grad_vectors.mean(dim=2, keepdim=True)
        grad_vectors = grad_vectors.view(rows, d, h_out, w_out)
        grad = torch.zeros(rows, 1, h, w, dtype=torch.float64, device=vectors.device)
        for k in range(d):
            dy, dx = divmod(k, radius)
            grad[:, 0, dy:dy + h_out, dx:dx + w_out] += grad_vectors[:, k]
        return None, grad.to(dtype), None


def _half_log_det(q: Tensor, p: Tensor, radius: int) -> Tensor:
    """``1/2 log det(M + 5e-4 I)`` for each row of ``q, p [R,1,H,W]``, ``[R]`` (float64)."""
    d = radius * radius
    sigma_y, sigma_yp, sigma_p = _Scatters.apply(q, p, radius)
    eye = torch.eye(d, dtype=torch.float64, device=q.device)
    chol_p = _cholesky(sigma_p + _POS_ALPHA * eye)
    # (Y P^T)(P P^T + aI)^-1 (Y P^T)^T = Z^T Z with Z = L_P^-1 (Y P^T)^T
    z = torch.linalg.solve_triangular(chol_p, sigma_yp.transpose(1, 2), upper=False)
    cond = sigma_y - z.transpose(1, 2) @ z
    cond = 0.5 * (cond + cond.transpose(1, 2)) + _POS_ALPHA * eye
    chol = _cholesky(cond)
    # 1/2 log det = 1/2 * 2 sum log(diag(L) + 1e-8)
    return torch.log(torch.diagonal(chol, dim1=-2, dim2=-1) + _LOG_EPS).sum(dim=-1)


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
    return _rmi_term(q, p, radius, float32_classes=float32_classes,
                     size=tuple(labels.shape[2:]), stride=pool_stride)


def _rmi_term(q: Tensor, p: Tensor, radius: int, *, float32_classes: bool,
              size: tuple[int, ...], stride: int) -> Tensor:
    """:func:`rmi_lower_bound` on pooled ``q, p [N,C,h,w]`` (``size``: the unpooled size)."""
    n, c, h, w = q.shape
    if h < radius or w < radius:
        raise InvalidValueError(
            f"RMI needs a pooled size >= radius={radius}, but the input {size} "
            f"pools to {(h, w)} (pool_stride={stride})"
        )
    rows, d = n * c, radius * radius
    q_rows, p_rows = q.reshape(rows, 1, h, w), p.reshape(rows, 1, h, w)
    # An (image, class) pair whose pooled labels are constant (a class absent from the image, or
    # filling it) has Y = 0 once centred, so M = 0: its term is the constant 1/2 log det of the
    # jitter, without gradient, and is not computed.
    flat = q_rows.reshape(rows, -1)
    varying = torch.nonzero(flat.amax(dim=1) != flat.amin(dim=1)).squeeze(1)
    rmi_bc = torch.full((rows,), d * math.log(math.sqrt(_POS_ALPHA) + _LOG_EPS),
                        dtype=torch.float64, device=q.device)
    if varying.numel() < rows:
        q_rows, p_rows = q_rows.index_select(0, varying), p_rows.index_select(0, varying)
    if varying.numel() > 0:
        # pairs in chunks keep the float64 temporaries small (faster allocation)
        step = max(1, _CHUNK_ELEMENTS // (d * (h - radius + 1) * (w - radius + 1)))
        values = torch.cat([_half_log_det(q_rows[i:i + step], p_rows[i:i + step], radius)
                            for i in range(0, varying.numel(), step)])
        rmi_bc = values if varying.numel() == rows else rmi_bc.index_copy(0, varying, values)
    rmi_bc = rmi_bc.view(n, c)
    per_class = rmi_bc.mean(dim=0)
    if float32_classes:
        per_class = per_class.float()
    return (per_class / float(radius * radius)).sum()


class _SigmoidPool(torch.autograd.Function):
    """The BCE sum and the pooled probabilities from ``logits [N,C,H,W]`` in few passes over
    the full-size tensors: forward ``sum_{valid, c} softplus(x) - sum_valid x_label`` and
    ``pool(sigmoid(x) * v + 1e-6)``; backward ``(sigmoid(x) - q) v`` plus the pooling's
    gradient through the sigmoid (for max pooling only at the pooled maxima: a scatter).
    ``labels [N,H,W]`` hold 0 at invalid pixels, ``valid [N,H,W]`` is bool."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor, valid: Tensor, pool: str, size: int,
                stride: int) -> tuple[Tensor, Tensor]:
        mask = valid.unsqueeze(1).to(logits.dtype)
        # softplus is exact to rounding with its x > threshold branch at 20 (40 in float64)
        threshold = 40.0 if logits.dtype == torch.float64 else 20.0
        per_pixel = F.softplus(logits, threshold=threshold).sum(dim=1, keepdim=True)
        per_pixel -= logits.gather(1, labels.unsqueeze(1))
        bce_sum = (per_pixel * mask).sum()
        del per_pixel
        probs = torch.addcmul(logits.new_tensor(_CLIP_MIN), torch.sigmoid(logits), mask)
        # CPU pooling is vectorised over channels in channels-last layout only (same values and
        # indices; ~6x faster, the layout change included)
        probs = probs.contiguous(memory_format=torch.channels_last)
        ctx.options = (pool, size, stride)
        if pool == "max":
            pooled, where = F.max_pool2d(probs, size, stride=stride, padding=size // 2,
                                         return_indices=True)
            ctx.save_for_backward(logits, labels, valid, where)
        else:
            pooled = F.avg_pool2d(probs, size, stride=stride, padding=size // 2)
            ctx.save_for_backward(logits, labels, valid)
        return bce_sum, pooled

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_bce: Tensor, grad_pooled: Tensor) -> tuple[Tensor | None, ...]:
        logits, labels, valid = ctx.saved_tensors[:3]
        pool, size, stride = ctx.options
        n, c, h, w = logits.shape
        mask = valid.unsqueeze(1).to(logits.dtype)
        sig = torch.sigmoid(logits)
        if pool == "max":
            grad = sig.mul_(mask * grad_bce)
            where = ctx.saved_tensors[3].reshape(n, c, -1)
            at = torch.sigmoid(logits.reshape(n, c, h * w).gather(2, where))
            at_valid = valid.reshape(n, 1, h * w).expand(n, c, h * w).gather(2, where)
            part = grad_pooled.reshape(n, c, -1) * at * (1.0 - at) * at_valid
            grad.view(n, c, h * w).scatter_add_(2, where, part)
        else:
            grad_probs = torch.ops.aten.avg_pool2d_backward(
                grad_pooled, logits, [size, size], [stride, stride], [size // 2, size // 2],
                False, True, None)
            grad = grad_probs.mul_(1.0 - sig).add_(grad_bce).mul_(sig).mul_(mask)
        # - q v: subtract grad_bce at each valid pixel's label
        grad.view(n, c, h * w).scatter_add_(1, labels.view(n, 1, h * w),
                                            (mask * -grad_bce).view(n, 1, h * w))
        return grad, None, None, None, None, None


def _pooled_onehot(labels: Tensor, valid: Tensor, classes: int, *, pool: str, size: int,
                   stride: int, dtype: torch.dtype) -> Tensor:
    """``pool(one_hot(labels) * v)`` ``[N,C,h,w]`` (``labels`` 0 at invalid pixels). Without
    overlap (``size == stride``) from per-window label counts, never building the one-hot."""
    n, h, w = labels.shape
    pad = size // 2
    if size != stride:
        onehot = F.one_hot(labels, classes).permute(0, 3, 1, 2).to(dtype)
        onehot *= valid.unsqueeze(1)
        if pool == "max":
            return F.max_pool2d(onehot, size, stride=stride, padding=pad)
        return F.avg_pool2d(onehot, size, stride=stride, padding=pad)
    out_h, out_w = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
    row = (torch.arange(h, device=labels.device) + pad) // stride
    col = (torch.arange(w, device=labels.device) + pad) // stride
    cell = (row.view(h, 1) * out_w + col.view(1, w)).view(1, h, w)
    cell = cell + torch.arange(n, device=labels.device).view(n, 1, 1) * (out_h * out_w)
    inside = valid & (row < out_h).view(1, h, 1) & (col < out_w).view(1, 1, w)
    counts = torch.bincount((cell * classes + labels)[inside],
                            minlength=n * out_h * out_w * classes)
    counts = counts.view(n, out_h, out_w, classes).permute(0, 3, 1, 2)
    if pool == "max":
        return (counts > 0).to(dtype)
    return counts.to(dtype) / float(size * size)  # zero padding counts in the average


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
    labels = torch.where(valid, labels, 0)
    float32_classes = output_dtype == "float32"
    if pool in ("max", "avg") and pool_stride > 1:  # the fused path: see _SigmoidPool
        bce_sum, probs = _SigmoidPool.apply(logits, labels, valid, pool, pool_size, pool_stride)
        onehot = _pooled_onehot(labels, valid, num_classes, pool=pool, size=pool_size,
                                stride=pool_stride, dtype=logits.dtype)
        bce = bce_sum / (valid.sum().to(logits.dtype) + 1.0)
        rmi = _rmi_term(onehot, probs, radius, float32_classes=float32_classes,
                        size=tuple(logits.shape[2:]), stride=pool_stride)
    else:
        mask = valid.unsqueeze(1).to(logits.dtype)
        onehot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(logits.dtype) * mask
        bce_sum = (F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
                   * mask).sum()
        bce = bce_sum / (mask.sum() + 1.0)
        probs = torch.sigmoid(logits) * mask + _CLIP_MIN
        rmi = rmi_lower_bound(onehot, probs, radius=radius, pool=pool, pool_size=pool_size,
                              pool_stride=pool_stride, float32_classes=float32_classes)
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
