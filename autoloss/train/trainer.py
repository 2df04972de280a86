"""Train a segmentation model with any loss, evaluate it with the exact metrics.

``fit`` reads top to bottom: config, data as tensors, optimizer, one loop over the steps that calls
its callbacks (:mod:`autoloss.train.callbacks`: log, progress bar, checkpoint, ``on_eval``) after
each step and at each evaluation point. Every step samples a
batch from the in-memory arrays (``dataset.arrays()``), scales it to ``[0, 1]``, normalises it
with the dataset's ``mean`` / ``std``, augments it (random scale, crop, flip), and takes one
optimizer step with the poly learning rate (Chen et al., DeepLab, TPAMI 2018)::

    lr_t = lr * (1 - t / steps) ** poly_power          t = 0, ..., steps - 1

Every ``eval_every`` steps and at the end the model is scored on ``eval_data`` (full images, no
augmentation) with :class:`autoloss.core.metrics.MetricAccumulator`, a checkpoint is written, and
``on_eval(step, metrics)`` is called; an exception raised there (a search's pruning signal)
propagates, with the checkpoint and log already complete on disk.

Randomness: the batch order and the augmentation of step ``t`` come from generators seeded with
``(seed, epoch)`` and ``(seed, t)``, so a run resumed from a checkpoint takes exactly the steps
an uninterrupted run takes (same final weights on CPU). This module knows nothing of the search.

It stays one module, a little over 450 lines: what is left here is the loop and the state it
carries from step to step (batch order, stepper, save and resume), which that exact-resume promise
ties together; the config, callbacks, checkpoint files and models are modules of their own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from autoloss.core.metrics import MetricAccumulator
from autoloss.data import Augment, normalize
from autoloss.errors import InvalidTypeError, InvalidValueError, NonFiniteLossError
from autoloss.train.callbacks import (
    Checkpointer,
    JsonlWriter,
    LogRecords,
    LoopState,
    OnEval,
    ProgressBar,
    TrainCallback,
)
from autoloss.train.checkpoint import (
    CHECKPOINT_FORMAT,
    read_checkpoint,
    warm_start,
    write_checkpoint,
)
from autoloss.train.models import (
    DeepLabConfig,
    UNetConfig,
    config_to_dict,
    logits_at,
    pick_device,
)
from autoloss.train.train_config import TrainConfig

__all__ = ["NonFiniteLossError", "TrainCallback", "TrainConfig", "TrainResult", "evaluate", "fit"]

# TrainConfig fields that do not change the trajectory (may differ when resuming)
_FREE_FIELDS = frozenset({"device", "num_threads", "eval_every", "log_every", "eval_batch_size"})


@dataclass
class TrainResult:
    """What :func:`fit` did.

    ``metrics``: the final evaluation (empty without ``eval_data``); ``history``: every
    evaluation as ``{"step": t, "metrics": {...}}`` (including those before a resume);
    ``steps``: steps done; ``start_step``: the step this call resumed from (0 = fresh);
    ``wall_time``: seconds of this call; ``seconds_per_step``: training seconds per step of this
    call (evaluation excluded); ``eval_time``: evaluation seconds of this call; ``final_loss``:
    loss of the last step taken in this call (None if none was).
    """

    metrics: dict[str, float]
    history: list[dict[str, Any]]
    steps: int
    start_step: int
    wall_time: float
    seconds_per_step: float
    eval_time: float
    final_loss: float | None


# ---- data ------------------------------------------------------------------------------------


@dataclass
class _Split:
    """A split as tensors: images ``[N,H,W,C]`` (uint8 or float in [0,1]), labels ``[N,H,W]``
    (integers, as stored; int64 per batch)."""

    images: Tensor
    labels: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    ignore_index: int | None

    @classmethod
    def of(cls, data: Any, name: str) -> _Split:
        for attr in ("arrays", "mean", "std", "num_classes", "ignore_index"):
            if not hasattr(data, attr):
                raise InvalidTypeError(f"{name} must be a dataset from autoloss.data.load_dataset (with "
                                f"arrays(), mean, std, num_classes, ignore_index), but got "
                                f"{type(data).__name__} without {attr!r}")
        images, labels = data.arrays()
        if images.ndim != 4 or labels.shape != images.shape[:3] or len(labels) == 0:
            raise InvalidValueError(f"{name}.arrays() must return images [N,H,W,C] and labels [N,H,W] "
                             f"with N >= 1, but got {images.shape} and {labels.shape}")
        if labels.dtype not in (np.uint8, np.int16, np.int32, np.int64):  # kept small until batched
            labels = labels.astype(np.int32)
        return cls(torch.from_numpy(np.ascontiguousarray(images)),
                   torch.from_numpy(np.ascontiguousarray(labels)),
                   tuple(data.mean), tuple(data.std), int(data.num_classes), data.ignore_index)

    def batch(self, index: Tensor | slice, device: torch.device) -> tuple[Tensor, Tensor]:
        """Normalised float ``[B,C,H,W]`` images and int64 ``[B,H,W]`` labels on ``device``."""
        x = self.images[index].to(device)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        x = normalize(x.permute(0, 3, 1, 2), self.mean, self.std).contiguous()
        return x, self.labels[index].to(device).long()


def _derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (numpy SeedSequence mixing)."""
    words = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class _BatchOrder:
    """Step ``t`` takes positions ``[t*B, (t+1)*B)`` of an endless stream of epochs, each a
    permutation of the N images drawn from a generator seeded with ``(seed, epoch)``."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(_derive_seed(self.seed, 0, epoch))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int) -> Tensor:
        pos = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs = pos // self.n
        out = torch.empty_like(pos)
        for e in torch.unique(epochs).tolist():
            sel = epochs == e
            out[sel] = self._perm(e)[pos[sel] % self.n]
        return out


# ---- evaluation ------------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def _evaluate_split(model: nn.Module, split: _Split, *, metrics: Sequence[str] | None,
                    batch_size: int, tol: int, max_images: int | None,
                    drop_bg: bool = False) -> dict[str, float]:
    device = _model_device(model)
    acc = MetricAccumulator(num_classes=split.num_classes, ignore_index=split.ignore_index,
                            tol=tol, drop_bg=drop_bg, metrics=metrics)
    n = len(split.labels) if max_images is None else min(max_images, len(split.labels))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            x, y = split.batch(slice(start, min(start + batch_size, n)), device)
            logits = logits_at(model(x), y.shape[-2:], num_classes=split.num_classes)
            acc.update(logits.max(dim=1).indices, y)  # = argmax(1), ~8x faster on CPU
    finally:
        model.train(was_training)
    return acc.compute()


def evaluate(model: nn.Module, data: Any, *, metrics: Sequence[str] | None = None,
             batch_size: int = 16, device: str | None = None, tol: int = 5,
             max_images: int | None = None, drop_bg: bool = False) -> dict[str, float]:
    """Exact metrics of ``model`` on a dataset (full images, no augmentation).

    The model is run in ``eval()`` mode under ``torch.no_grad()`` (its mode is restored after);
    predictions are ``argmax`` over classes of the logits ``[B, C, H, W]``.

    Args:
        data: a dataset from :func:`autoloss.data.load_dataset` (``arrays()``, ``mean``, ``std``).
        metrics: names from ``autoloss.core.metrics.METRIC_NAMES`` (default all). tol: boundary
            tolerance in pixels. drop_bg: see :class:`~autoloss.core.metrics.MetricAccumulator`.
            device: moves the model there (default: where it is).
        max_images: score only the first this many images.

    Returns:
        metric name -> value in [0, 1] (NaN if undefined).
    """
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise InvalidValueError(f"max_images must be a positive int or None, but got {max_images=}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidValueError(f"batch_size must be a positive int, but got {batch_size=}")
    if device is not None:
        model.to(pick_device(device))
    return _evaluate_split(model, _Split.of(data, "data"), metrics=metrics, batch_size=batch_size,
                           tol=tol, max_images=max_images, drop_bg=drop_bg)


# ---- training --------------------------------------------------------------------------------


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    return config_to_dict(config) if isinstance(config, (UNetConfig, DeepLabConfig)) else None


def _plain(value: Any) -> Any:
    """JSON-able plain Python (numpy scalars/arrays -> lists/floats); torch.load-safe."""
    def default(obj: Any) -> Any:
        if hasattr(obj, "tolist"):
            return obj.tolist()
        raise InvalidTypeError(f"cannot store {type(obj).__name__} in a checkpoint")
    return json.loads(json.dumps(value, default=default))


def _check_resume(stored: dict[str, Any], config: TrainConfig, path: Path) -> None:
    current = dataclasses.asdict(config)
    diff = [f"{k}: checkpoint {stored.get(k)!r} vs now {current[k]!r}" for k in current
            if k not in _FREE_FIELDS and _plain(stored.get(k)) != _plain(current[k])]
    if diff:
        raise InvalidValueError(f"cannot resume from {path}: it was written with a different training "
                         f"config ({'; '.join(diff)}); pass resume=False or another "
                         f"checkpoint_path")


def fit(model: nn.Module, loss: nn.Module, train_data: Any, *, config: TrainConfig,
        eval_data: Any = None, metrics: Sequence[str] | None = None, tol: int = 5,
        drop_bg: bool = False, on_eval: Callable[[int, dict[str, float]], None] | None = None,
        checkpoint_path: str | Path | None = None, resume: bool = True,
        init_from: str | Path | None = None, log_path: str | Path | None = None,
        tensorboard_dir: str | Path | None = None, progress: bool = True,
        progress_desc: str = "train", callbacks: Sequence[TrainCallback] = ()) -> TrainResult:
    """Train ``model`` (in place, moved to ``config.device``) with ``loss`` on ``train_data``.

    Args:
        model: images ``[N, C_in, H, W]`` -> logits ``[N, C, h, w]`` (e.g. from
            :mod:`autoloss.train.models`, or your own); logits at a lower resolution than the
            input (``h <= H``, ``w <= W``) are upsampled bilinearly to the labels' size before
            the loss and the metrics (:func:`~autoloss.train.models.logits_at`).
        loss: called as ``loss(logits [N,C,H,W], target [N,H,W] long) -> scalar``; target
            pixels equal to the dataset's ``ignore_index`` are left in (the loss handles them).
        train_data, eval_data: datasets from :func:`autoloss.data.load_dataset`.
        metrics, tol, drop_bg: what to evaluate (default all of ``METRIC_NAMES``), boundary
            tolerance, class 0 left out of the boundary metrics (``MetricAccumulator``).
        on_eval: ``on_eval(step, metrics)`` after each evaluation and its checkpoint.
        checkpoint_path: written (atomically) after each evaluation and at the end.
        resume: continue from ``checkpoint_path`` if it exists (same training config required).
        init_from: warm start: copy the weights whose names and shapes match from this
            checkpoint (ignored when resuming).
        log_path: JSONL log, one object per line: ``{"step", "loss", "lr", "time"}`` every
            ``log_every`` steps, ``{"step", "eval": {...}}`` per evaluation (NaN -> null).
        tensorboard_dir: also write those records as TensorBoard scalars there
            (:mod:`autoloss.train.tensorboard_log`; needs the ``tensorboard`` package).
        progress: show a tqdm progress bar (labelled ``progress_desc``).
        callbacks: more :class:`~autoloss.train.callbacks.TrainCallback` s, called after the
            built-in ones (log, progress bar, checkpoint, ``on_eval``) at every step and
            evaluation point.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (no update, nothing written).
    """
    if not isinstance(config, TrainConfig):
        raise InvalidTypeError(f"config must be a TrainConfig, but got {type(config).__name__}")
    started = time.perf_counter()
    old_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    hooks: list[TrainCallback] = []
    try:
        torch.manual_seed(config.seed)
        train = _Split.of(train_data, "train_data")
        evals = _Split.of(eval_data, "eval_data") if eval_data is not None else None
        step_fn = _Stepper(model, loss, train, config)
        state = LoopState(model=model, loss=loss, optimizer=step_fn.optimizer, config=config,
                          started=started)
        if checkpoint_path is not None and resume and checkpoint_path.exists():
            _resume(state, checkpoint_path)
        elif init_from is not None:
            warm_start(model, init_from)
        hooks = _builtin_callbacks(state, log_path=log_path, tensorboard_dir=tensorboard_dir,
                                   checkpoint_path=checkpoint_path, on_eval=on_eval,
                                   progress=progress, progress_desc=progress_desc)
        hooks += list(callbacks)
        train_time = eval_time = 0.0
        last_loss: float | None = None
        for step in range(state.start, config.steps):
            t0 = time.perf_counter()
            last_loss, lr = step_fn(step)
            done = step + 1
            train_time += time.perf_counter() - t0
            for hook in hooks:
                hook.on_step(done, last_loss, lr, state)
            if done % config.eval_every != 0 and done != config.steps:
                continue
            scores = None
            if evals is not None:
                t1 = time.perf_counter()
                scores = _evaluate_split(model, evals, metrics=metrics, tol=tol, drop_bg=drop_bg,
                                         max_images=None, batch_size=config.eval_batch_size)
                eval_time += time.perf_counter() - t1
                state.history.append({"step": done, "metrics": scores})
            for hook in hooks:
                hook.on_eval(done, scores, state)

        final: dict[str, float] = {}
        if state.history and state.history[-1]["step"] == config.steps:
            final = dict(state.history[-1]["metrics"])
        elif evals is not None:  # resumed from a finished run that was not evaluated
            final = _evaluate_split(model, evals, metrics=metrics, tol=tol, drop_bg=drop_bg,
                                    max_images=None, batch_size=config.eval_batch_size)
        steps_run = config.steps - state.start
        return TrainResult(metrics=final, history=state.history, steps=config.steps,
                           start_step=state.start, wall_time=time.perf_counter() - started,
                           seconds_per_step=train_time / steps_run if steps_run else 0.0,
                           eval_time=eval_time, final_loss=last_loss)
    finally:
        for hook in hooks:
            hook.close()
        torch.set_num_threads(old_threads)


class _Stepper:
    """One optimizer step of ``fit``: the batch of step ``t`` (seeded order), its augmentation
    (seeded by ``(seed, t)``), the poly learning rate, forward, loss, backward, clip, step."""

    def __init__(self, model: nn.Module, loss: nn.Module, train: _Split,
                 config: TrainConfig) -> None:
        self.model, self.loss, self.train, self.config = model, loss, train, config
        self.device = pick_device(config.device)
        self.order = _BatchOrder(len(train.labels), config.batch_size, config.seed)
        self.augment = None  # without augment, a crop is still a random crop
        if config.augment or config.crop is not None:
            self.augment = Augment(crop=config.crop,
                                   scale=config.scale if config.augment else None,
                                   flip=config.augment, ignore_index=train.ignore_index)
        model.to(self.device).train()
        loss.to(self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if config.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                self.params, lr=config.lr, momentum=config.momentum,
                weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(self.params, lr=config.lr,
                                               weight_decay=config.weight_decay)

    def __call__(self, step: int) -> tuple[float, float]:
        """Take step ``step`` (0-based); returns ``(loss value, learning rate)``."""
        config, train = self.config, self.train
        x, y = train.batch(self.order.indices(step), self.device)
        if self.augment is not None:
            g = torch.Generator().manual_seed(_derive_seed(config.seed, 1, step))
            x, y = self.augment(x, y, g)
        lr = config.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # decoder-resolution logits (h, w below the labels') are upsampled bilinearly
        logits = logits_at(self.model(x), y.shape[-2:], num_classes=train.num_classes)
        value = self.loss(logits, y)
        if not isinstance(value, Tensor) or value.dim() != 0:
            raise InvalidValueError(f"the loss must return a scalar tensor, but got "
                                    f"{getattr(value, 'shape', type(value).__name__)}")
        loss_value = float(value.detach())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(step + 1, loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        value.backward()
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, config.grad_clip)
        self.optimizer.step()
        return loss_value, lr


def _resume(state: LoopState, path: Path) -> None:
    """Load the checkpoint of an interrupted run into ``state`` (same training config
    required): weights, optimizer, random state, history, step and time so far."""
    ckpt = read_checkpoint(path)
    _check_resume(ckpt["train_config"], state.config, path)
    state.model.load_state_dict(ckpt["model"])
    if ckpt.get("optimizer") is not None:  # None in a finished run's checkpoint (see _save)
        state.optimizer.load_state_dict(ckpt["optimizer"])
    elif ckpt["step"] < state.config.steps:
        raise InvalidValueError(f"{path}: the checkpoint of step {ckpt['step']} holds no "
                                f"optimizer state, so the run cannot go on to step "
                                f"{state.config.steps}; start it again in a new folder")
    torch.set_rng_state(ckpt["rng"]["torch"])
    state.start, state.history, state.prior_time = ckpt["step"], ckpt["history"], ckpt["elapsed"]


def _save(path: Path, step: int, state: LoopState) -> None:
    """The checkpoint :func:`_resume` reads (format :data:`CHECKPOINT_FORMAT`). At the last
    step the optimizer state is left out (``None``): a finished run never steps again, and
    AdamW's two moment buffers would triple the file a warm start reads."""
    loss = state.loss
    loss_spec = loss.to_dict() if callable(getattr(loss, "to_dict", None)) else None
    finished = step >= state.config.steps
    write_checkpoint(path, {
        "format": CHECKPOINT_FORMAT, "step": step, "model": state.model.state_dict(),
        "model_config": _model_config(state.model),
        "optimizer": None if finished else state.optimizer.state_dict(),
        "train_config": _plain(dataclasses.asdict(state.config)), "loss": _plain(loss_spec),
        "rng": {"torch": torch.get_rng_state()}, "history": _plain(state.history),
        "elapsed": state.elapsed(),
    })


def _builtin_callbacks(state: LoopState, *, log_path: str | Path | None,
                       tensorboard_dir: str | Path | None, checkpoint_path: Path | None,
                       on_eval: Callable[[int, dict[str, float]], None] | None, progress: bool,
                       progress_desc: str) -> list[TrainCallback]:
    """The callbacks ``fit``'s arguments ask for, in the order they run: log, progress bar,
    checkpoint, ``on_eval`` (so an exception from ``on_eval``, a search's pruning signal,
    leaves the log and the checkpoint complete)."""
    hooks: list[TrainCallback] = []
    writers: list[Any] = []
    try:
        if log_path is not None:
            writers.append(JsonlWriter(log_path, start=state.start))
        if tensorboard_dir is not None:
            from autoloss.train.tensorboard_log import TensorBoardLog

            writers.append(TensorBoardLog(tensorboard_dir, purge_step=state.start))
    except BaseException:
        for writer in writers:
            writer.close()
        raise
    if writers:
        hooks.append(LogRecords(writers, log_every=state.config.log_every,
                                steps=state.config.steps))
    hooks.append(ProgressBar(total=state.config.steps, initial=state.start, desc=progress_desc,
                             disable=not progress))
    if checkpoint_path is not None:
        hooks.append(Checkpointer(checkpoint_path, _save))
    if on_eval is not None:
        hooks.append(OnEval(on_eval))
    return hooks
