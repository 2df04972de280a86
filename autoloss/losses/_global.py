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

``sync`` may also be a ``torch.distributed`` process group (e.g. ``dist.new_group(ranks)``): the
sums then run over that group only (a loss spec records it as ``"global"``: a group cannot be
saved). ``sync="global"`` without an initialised process group (a single process) is the local
loss, which is then the full batch's. Every rank must call the loss the same number of times (a
collective), also ranks whose images are all ignored.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from autoloss.errors import InvalidValueError
from autoloss.losses._validate import did_you_mean

__all__ = ["SYNCS", "Processes", "check_sync", "processes", "sync_entry"]

SYNCS = ("local", "global")

Sync = Any  # "local", "global" or a torch.distributed.ProcessGroup


def check_sync(sync: Any) -> Sync:
    """``sync`` is ``"local"`` (each process on its own images), ``"global"`` (every process of
    the default group) or a ``torch.distributed.ProcessGroup``."""
    if dist.is_available() and isinstance(sync, dist.ProcessGroup):
        return sync
    if isinstance(sync, str) and sync in SYNCS:
        return sync
    raise InvalidValueError(
        f"sync must be one of {list(SYNCS)} or a torch.distributed process group, but got "
        f"sync={sync!r}{did_you_mean(sync, SYNCS) if isinstance(sync, str) else ''}"
    )


def sync_entry(sync: Sync) -> dict[str, str]:
    """``{"sync": "global"}`` for a loss spec (also for a process group, which cannot be saved),
    ``{}`` for the default (specs of local losses, and the identities of runs stored with them,
    do not change)."""
    return {} if sync == "local" else {"sync": "global"}


@dataclass(frozen=True)
class Processes:
    """The collectives of ``sync`` over one process group (``group=None``: the default one)."""

    group: Any = None

    def sums(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """Each tensor summed over the processes, with autograd, in one all-reduce (flattened
        into one vector of their promoted dtype, then split back)."""
        from torch.distributed.nn.functional import all_reduce

        dtype = tensors[0].dtype
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors])
        with _autograd_collectives():
            total = all_reduce(flat, group=self._group())
        out, start = [], 0
        for t in tensors:
            out.append(total[start:start + t.numel()].view(t.shape).to(t.dtype))
            start += t.numel()
        return tuple(out)

    def max(self, x: Tensor) -> Tensor:
        """The elementwise maximum of ``x`` over the processes (no gradient: label
        statistics)."""
        out = x.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=self.group)
        return out

    def gather(self, x: Tensor) -> Tensor:
        """``x [R, P_rank]`` of every process concatenated along dim 1 in rank order,
        ``[R, sum P]``, with autograd (processes may hold different ``P``: padded for the
        all-gather, then cut)."""
        from torch.distributed.nn.functional import all_gather

        size = torch.tensor([x.shape[1]], device=x.device)
        sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(sizes, size, group=self.group)
        counts = [int(s) for s in sizes]
        pad = max(counts) - x.shape[1]
        padded = x if pad == 0 else torch.cat([x, x.new_zeros(x.shape[0], pad)], dim=1)
        if not x.is_floating_point():  # labels: no gradient
            parts = [torch.empty_like(padded) for _ in counts]
            dist.all_gather(parts, padded.contiguous(), group=self.group)
        else:
            with _autograd_collectives():
                parts = list(all_gather(padded, group=self._group()))
        return torch.cat([part[:, :count] for part, count in zip(parts, counts)], dim=1)

    def _group(self) -> Any:
        return dist.group.WORLD if self.group is None else self.group


def processes(sync: Sync) -> Processes | None:
    """The collectives to use for ``sync`` (checked), or None when the loss is local: ``"local"``,
    or no initialised process group, or a group of one process."""
    if sync == "local" or not (dist.is_available() and dist.is_initialized()):
        return None
    group = None if sync == "global" else sync
    if dist.get_world_size(group) <= 1:
        return None
    return Processes(group)


@contextlib.contextmanager
def _autograd_collectives() -> Iterator[None]:
    """Silence torch 2.13's deprecation notice of the public autograd collectives (the
    replacement it names is private); only under ``sync`` with several processes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r"torch\.distributed\.nn\.functional\.")
        yield
