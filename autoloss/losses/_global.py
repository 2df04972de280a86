"""Global statistics across processes: the ``sync`` option of the losses built from per-class
sums.

Under ``DistributedDataParallel`` every process (rank) sees its own images. A region loss is a
ratio of per-class sums over the batch, so a rank that builds the ratio from its own images
optimises another objective than the full batch's (with small per-GPU batches, close to a
per-image IoU). With ``sync="global"`` the losses all-reduce their per-class sums over the
ranks, with autograd (``torch.distributed.nn.functional.all_reduce``), before the ratio: every
rank computes the same loss, the full batch's.

Gradient convention: the all-reduce's backward sums the gradients of every rank's (identical)
loss, so each rank's gradient with respect to its own logits is ``world_size`` times the
full-batch gradient of those logits. DDP then averages the parameter gradients over the ranks
(divides by ``world_size``), which gives exactly the single-process full-batch gradient; the
same scaling as a pixel-mean loss (cross-entropy) under DDP with equal per-rank batches, so the
two can be added. Without DDP's averaging, divide by ``world_size`` yourself.

The collectives are ``torch.distributed.nn.functional``'s (torch 2.13 marks them deprecated in
favour of the private ``torch.distributed._functional_collectives``; their FutureWarning is
silenced here, see :func:`_autograd_collectives`).

``sync="global"`` without an initialised process group (a single process) is the local loss,
which is then the full batch's. Every rank must call the loss the same number of times (a
collective), also ranks whose images are all ignored.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from autoloss.losses._validate import check_choice

__all__ = ["SYNCS", "check_sync", "gather_columns", "global_max", "global_sums", "is_global",
           "sync_entry"]

SYNCS = ("local", "global")


def check_sync(sync: Any) -> str:
    """``sync`` is ``"local"`` (each process on its own images) or ``"global"``."""
    return str(check_choice("sync", sync, SYNCS))


def sync_entry(sync: str) -> dict[str, str]:
    """``{"sync": "global"}`` for a loss spec, ``{}`` for the default (specs of local losses, and
    the identities of runs stored with them, do not change)."""
    return {} if sync == "local" else {"sync": sync}


def is_global(sync: str) -> bool:
    """Whether the sums must be all-reduced: ``sync="global"`` in an initialised process group
    of more than one process."""
    return (sync == "global" and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


@contextlib.contextmanager
def _autograd_collectives() -> Iterator[None]:
    """Silence torch 2.13's deprecation notice of the public autograd collectives (the
    replacement it names is private); only under ``sync="global"`` with several processes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r"torch\.distributed\.nn\.functional\.")
        yield


def global_sums(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Each tensor summed over the ranks, with autograd, in one all-reduce (the tensors are
    flattened into one vector of their promoted dtype, then split back)."""
    from torch.distributed.nn.functional import all_reduce

    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors])
    with _autograd_collectives():
        total = all_reduce(flat)
    out, start = [], 0
    for t in tensors:
        out.append(total[start:start + t.numel()].view(t.shape).to(t.dtype))
        start += t.numel()
    return tuple(out)


def global_max(x: Tensor) -> Tensor:
    """The elementwise maximum of ``x`` over the ranks (no gradient: label statistics)."""
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def gather_columns(x: Tensor) -> Tensor:
    """``x [R, P_rank]`` of every rank concatenated along dim 1 in rank order, ``[R, sum P]``,
    with autograd (ranks may hold different ``P``: padded for the all-gather, then cut)."""
    from torch.distributed.nn.functional import all_gather

    size = torch.tensor([x.shape[1]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    pad = max(counts) - x.shape[1]
    padded = x if pad == 0 else torch.cat([x, x.new_zeros(x.shape[0], pad)], dim=1)
    if not x.is_floating_point():  # all_gather's autograd needs no grad here
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded.contiguous())
    else:
        with _autograd_collectives():
            parts = list(all_gather(padded))
    return torch.cat([part[:, :count] for part, count in zip(parts, counts)], dim=1)
