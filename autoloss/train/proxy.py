"""Proxy training: the cheap, repeatable run that scores one candidate loss during the search.

A full training run per candidate is far too slow for a search on CPU (a 0.45M-parameter UNet
takes ~1.75 s per step on CamVid at 180x240 on 2 cores), so by default a trial is a short
**fine-tune** of a shared cross-entropy warm start (Auto Seg-Loss, Li et al., ICLR 2021, Sec. 4,
also scores candidates by short proxy training on held-out data):

1. :meth:`Proxy.prepare` trains the proxy model with cross-entropy once per dataset + model
   config (``warm_start_steps`` steps on the whole train split) and caches the weights in
   ``cache_dir/warmstart-<hash>.pt``, ``<hash>`` being a digest of every setting that changes
   them. Concurrent workers wait on a file lock; the file appears by atomic rename.
2. :meth:`Proxy.run` copies the warm start, fine-tunes it for ``steps`` steps with the
   candidate loss (poly learning rate, augmentation, seeded batch order) at reduced resolution
   (by default the larger side is divided until it is at most ``max_side``: CamVid
   180x240 -> 90x120), and scores the **exact** metrics on the proxy-validation split
   (``eval_split``, default ``val``; the test split is refused) after every ``eval_every``
   steps and at the end, calling ``on_eval(step, metrics)`` (the search prunes there).

Your own network: ``model`` takes a builder ``build(in_channels, num_classes) -> nn.Module``
(the callable, ``"module:function"`` or ``"path/to/file.py:function"``;
:mod:`autoloss.train.user_models`); the warm start, its cache (keyed by the builder's name and
its file's sha256), the seeded fine-tuning, the evaluation, pruning and re-scoring run on it
unchanged, and logits at a lower resolution are upsampled to the labels'. ``init``: a
pretrained state dict or autoloss checkpoint every trial starts from instead of the
cross-entropy warm start (its matching tensors are copied,
:func:`autoloss.train.checkpoint.warm_start`).

Variants: ``finetune="last"`` freezes the trunk, caches its features once per proxy and trains
only the last UNet block and the classifier (cheaper, nearly noiseless, but it ranked losses
poorly); ``warm_start=False`` trains every trial from a seeded initialisation (ranks losses by
boundary F1 much better than a short warm start, too noisy for mIoU). The defaults mirror the
retraining protocol (``experiments/retrain_camvid.yaml``): a cross-entropy warm start of 2000
steps at lr 0.05 (not fully converged), then 60 steps at lr 0.03 with the candidate loss.
``results/proxy_fidelity.md`` gives the measurements behind them: over the 10-loss CamVid
panel, against the retraining's validation scores, it ranks losses with Spearman 0.41 (mIoU) and
0.53 (BF1), the best mean of the variants tried but short of the 0.8 goal; ~23 CPU-s per
trial, and the warm start ~10 CPU-min once per dataset and model.

The same seed gives the same scores (CPU), so the search can compare losses with common random
numbers. Every option runs unchanged on a GPU (``device``).

Example (a proxy small enough to run in seconds; the defaults above take minutes):
    >>> import tempfile
    >>> from autoloss.losses import load_loss
    >>> tiny = {"data": "shapes?n=16&size=32", "width": 4, "depth": 2, "warm_start_steps": 4,
    ...         "steps": 4, "eval_every": 2}
    >>> with tempfile.TemporaryDirectory() as cache:
    ...     proxy = build_proxy(tiny, cache_dir=Path(cache))
    ...     proxy.prepare()                                     # trains and caches the warm start
    ...     scores = proxy.run(load_loss("soft-miou", ignore_index=255), seed=0)
    >>> 0 <= scores["miou"] <= 1
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoloss.data import dataset_splits, load_dataset, parse_spec, split_hint
from autoloss.errors import InvalidTypeError, InvalidValueError, MissingFileError
from autoloss.losses.compiled import compile_losses, compile_totals
from autoloss.losses.cross_entropy import CrossEntropyLoss
from autoloss.train.checkpoint import read_checkpoint, warm_start
from autoloss.train.models import DeepLabConfig, UNetConfig, build_model, pick_device
from autoloss.train.proxy_config import ProxyConfig
from autoloss.train.proxy_features import FeatureSplit, UNetTail
from autoloss.train.trainer import NonFiniteLossError, TrainConfig, evaluate, fit
from autoloss.train.user_models import (
    ModelHook,
    is_builtin,
    model_hook,
    model_identity,
)
from autoloss.utils.atomic import write_text_atomic
from autoloss.utils.locks import file_lock
from autoloss.utils.trust import code_file

__all__ = ["NonFiniteLossError", "Proxy", "ProxyConfig", "build_proxy"]

_MODELS = {"unet": UNetConfig, "deeplab": DeepLabConfig}
_CACHE_VERSION = 2  # bump when the warm-start recipe changes (2: data file sizes in the key)


def _file_sizes(path: Path) -> list[tuple[str, int]] | None:
    """Names and sizes of a dataset's files (a cheap fingerprint: replaced data gets another
    cache key; an edit that keeps every size needs ``autoloss cache clear``)."""
    path = path.resolve()
    if path.is_file():
        return [(path.name, path.stat().st_size)]
    if not path.is_dir():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file())[:10_000]
    return [(p.relative_to(path).as_posix(), p.stat().st_size) for p in files]


def _with_size(spec: str, size: tuple[int, int]) -> str:
    """``spec`` with a ``size=HxW`` option added (the spec must not have one)."""
    sep = "&" if "?" in spec else "?"
    return f"{spec}{sep}size={size[0]}x{size[1]}"


def resolve_data(config: ProxyConfig) -> str:
    """The dataset spec the proxy trains on: ``config.data`` with its resize option filled in."""
    parsed = parse_spec(config.data)
    if "size" in parsed.options:
        if config.size is not None:
            raise InvalidValueError(f"proxy option size={config.size} conflicts with the size option of "
                             f"data={config.data!r}; give one of them")
        return config.data
    if config.size is not None:
        return _with_size(config.data, config.size)
    if config.max_side is None:
        return config.data
    images, _ = load_dataset(config.data, config.eval_split, subset=1).arrays()
    h, w = images.shape[1:3]
    factor = math.ceil(max(h, w) / config.max_side)
    if factor <= 1:
        return config.data
    return _with_size(config.data, (max(1, round(h / factor)), max(1, round(w / factor))))


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class Proxy:
    """A built proxy (see the module docstring); make it with :func:`build_proxy`.

    Attributes: ``config`` (:class:`ProxyConfig`), ``data`` (the resolved spec), ``num_classes``,
    ``ignore_index``, ``image_size`` (``(H, W)`` of the train images), ``eval_steps`` (steps at
    which ``run`` evaluates), ``warm_start_path`` (None without a cross-entropy warm start:
    ``warm_start=False`` or an ``init`` file),
    ``last_run`` (timings of the latest :meth:`run`: ``wall_time``, ``seconds_per_step``,
    ``eval_time``, seconds; ``compiles`` and ``compile_time``: loss graphs compiled during it
    and the seconds their first calls took, included in ``seconds_per_step``).
    """

    def __init__(self, config: ProxyConfig, *, cache_dir: Path) -> None:
        self.config = config
        self.cache_dir = Path(cache_dir).expanduser()
        self.data = resolve_data(config)
        splits = dataset_splits(self.data)
        for split in ("train", config.eval_split):
            if split not in splits:
                raise InvalidValueError(f"proxy data {self.data!r} has no {split!r} split (it has "
                                 f"{splits}){split_hint(self.data, split)}; or set eval_split to "
                                 f"another held-out split (not 'test')")
        self._train = load_dataset(self.data, "train", subset=config.subset,
                                   subset_seed=config.subset_seed if config.subset else None)
        self._val = load_dataset(self.data, config.eval_split, subset=config.eval_subset)
        self.num_classes: int = int(self._train.num_classes)
        self.ignore_index: int | None = self._train.ignore_index
        self.image_size: tuple[int, int] = tuple(int(v) for v in
                                                 self._train.arrays()[0].shape[1:3])
        every = config.eval_every
        self.eval_steps: list[int] = sorted(set(range(every, config.steps + 1, every))
                                            | {config.steps})
        # a user's builder, imported now: a missing module or function fails before any training
        self._hook: ModelHook | None = (None if is_builtin(config.model) else
                                        model_hook(config.model, option="proxy option model"))
        if config.init is not None and not Path(config.init).expanduser().is_file():
            raise MissingFileError(f"proxy option init={config.init!r}: no such file (expected a "
                                   f"state dict or an autoloss checkpoint)")
        self.warm_start_path: Path | None = (self.cache_dir / f"warmstart-{self.key()}.pt"
                                             if config.warm_start and config.init is None
                                             else None)
        self._warm_state: dict[str, torch.Tensor] | None = None
        self._init_state: dict[str, torch.Tensor] | None = None
        self._cached: tuple[FeatureSplit, FeatureSplit] | None = None
        self.trained_warm_start = False  # set by prepare(): did this object train it?
        self.last_run: dict[str, float] = {}

    # ---- model and warm start ---------------------------------------------------------------

    def model_config(self) -> UNetConfig | DeepLabConfig | None:
        """The built-in model's config (None for a user's builder)."""
        c = self.config
        if self._hook is not None:
            return None
        return _MODELS[c.model](in_channels=int(self._train.in_channels),
                                num_classes=self.num_classes, width=c.width, depth=c.depth,
                                norm=c.norm)

    def build_model(self, seed: int) -> nn.Module:
        """A fresh proxy model (built-in or the user's builder), initial weights seeded."""
        if self._hook is not None:
            return self._hook(int(self._train.in_channels), self.num_classes, seed=seed)
        return build_model(self.model_config(), seed=seed)

    def model_record(self) -> dict[str, Any]:
        """What a search records of the proxy's network (loss file provenance, run folder):
        ``model`` (a built-in's config, or ``{"builder", "sha256"}`` of a user's builder) and
        ``init`` / ``init_sha256`` (the starting point instead of the warm start, or None)."""
        from autoloss.utils.provenance import file_sha256

        config = self.model_config()
        model = (model_identity(self.config.model) if config is None
                 else {"arch": self.config.model, **dataclasses.asdict(config)})
        init = self.config.init
        return {"model": json.loads(json.dumps(model, default=list)), "init": init,
                "init_sha256": None if init is None else file_sha256(Path(init).expanduser())}

    def _model_key(self) -> dict[str, Any]:
        """The model's part of the warm-start key: a built-in's config, or the builder's name
        (a file by its resolved path) and its file's sha256."""
        config = self.model_config()
        if config is not None:
            return dataclasses.asdict(config)
        ident = model_identity(self.config.model)
        file = code_file(ident["builder"])
        if file is not None:  # a relative and an absolute path give the same key
            ident["builder"] = f"{file.resolve()}:{ident['builder'].rpartition(':')[2]}"
        return ident

    def warm_start_config(self) -> TrainConfig:
        """Cross-entropy training of the shared starting point (whole train split)."""
        c = self.config
        return self._train_config(steps=c.warm_start_steps, lr=c.warm_start_lr,
                                  augment=c.augment, eval_every=min(100, c.warm_start_steps),
                                  seed=c.warm_start_seed)

    def _train_config(self, **run: Any) -> TrainConfig:
        """A TrainConfig with the settings the warm start and the trials share (batch, crop,
        optimizer, clipping, execution) and ``run``'s own (steps, lr, augment, eval_every,
        seed): the one place ProxyConfig's fields become training settings."""
        c = self.config
        return TrainConfig(batch_size=c.batch_size, crop=c.crop, optimizer=c.optimizer,
                           grad_clip=c.grad_clip, device=c.device, num_threads=c.num_threads,
                           **run)

    def key(self) -> str:
        """Digest of every setting that changes the warm-start weights."""
        spec = parse_spec(self.data)  # a relative and an absolute path give the same key
        data = {"kind": spec.kind, "options": spec.options,
                "path": str(spec.path.resolve()) if spec.path is not None else None,
                "files": _file_sizes(spec.path) if spec.path is not None else None}
        ident = {"version": _CACHE_VERSION, "data": data, "model": self._model_key(),
                 "train": {k: v for k, v in dataclasses.asdict(self.warm_start_config()).items()
                           if k not in ("device", "num_threads", "eval_every")}}
        text = json.dumps(ident, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def prepare(self, *, progress: bool = False) -> None:
        """Train and cache the cross-entropy warm start (once; a no-op when the file exists);
        ``progress`` shows its bar.

        Safe when several processes call it at once: one trains while the others wait on a lock
        file; an interrupted run resumes from its partial checkpoint."""
        self._prepare_warm_start(progress=progress)
        if self.config.finetune == "last":
            self._features()

    def _prepare_warm_start(self, *, progress: bool = False) -> None:
        path = self.warm_start_path
        if path is None or path.exists():
            return
        if progress:
            print(f"training the cross-entropy warm start ({self.config.warm_start_steps} steps, "
                  f"once per data and model; cached in {path.parent})", flush=True)
        with file_lock(path.with_suffix(".lock")):
            if path.exists():  # another process made it while this one waited
                return
            partial = path.with_name(f"{path.stem}.partial.pt")
            model = self.build_model(self.config.warm_start_seed)
            # the package's cross-entropy: an all-ignore batch gives 0, not torch's NaN
            loss = CrossEntropyLoss(ignore_index=self.ignore_index)
            # checkpoints every 100 steps (an interrupted warm start resumes), no evaluation
            train = self._train if self.config.subset is None else load_dataset(self.data, "train")
            result = fit(model, loss, train, config=self.warm_start_config(),
                         checkpoint_path=partial, resume=True, progress=progress,
                         progress_desc="warm start")
            scores = evaluate(model, self._val, metrics=self.config.metrics, tol=self.config.tol,
                              drop_bg=self.config.drop_bg)
            info = {"key": self.key(), "data": self.data, "proxy": self.config.to_dict(),
                    "model": self._model_key(),
                    "val_metrics": scores, "wall_time": result.wall_time,
                    "seconds_per_step": result.seconds_per_step}
            write_text_atomic(path.with_suffix(".json"), json.dumps(info, indent=1, default=str))
            os.replace(partial, path)
            self.trained_warm_start = True

    def _initial_model(self, seed: int) -> nn.Module:
        """The model a trial with ``seed`` starts from: built with ``seed``, then the ``init``
        file's or the warm start's weights loaded."""
        model = self.build_model(seed)
        if self.config.init is not None:
            self._load_init(model)
        elif self.warm_start_path is not None:
            if self._warm_state is None:
                if not self.warm_start_path.exists():
                    self._prepare_warm_start()
                self._warm_state = read_checkpoint(self.warm_start_path)["model"]
            model.load_state_dict(self._warm_state)
        return model

    def _load_init(self, model: nn.Module) -> None:
        """Copy the ``init`` file's matching tensors into ``model`` (read and checked once, with
        one warning for the tensors that keep their seeded values)."""
        if self._init_state is None:
            with warnings.catch_warnings():
                warnings.simplefilter("always")  # once per proxy, not once per process
                skipped = set(warm_start(model, Path(self.config.init).expanduser()))
            self._init_state = {k: v.detach().clone() for k, v in model.state_dict().items()
                                if k not in skipped}
        else:
            model.load_state_dict(self._init_state, strict=False)

    # ---- one trial --------------------------------------------------------------------------

    def _features(self) -> tuple[FeatureSplit, FeatureSplit]:
        """Trunk features of the train and eval splits (computed once per object)."""
        if self._cached is None:
            trunk = self._initial_model(self.config.warm_start_seed)
            device = pick_device(self.config.device)
            with _threads(self.config.num_threads):
                self._cached = (FeatureSplit.of(trunk, self._train, device),
                                FeatureSplit.of(trunk, self._val, device))
        return self._cached

    def train_config(self, seed: int) -> TrainConfig:
        """The fine-tuning run of a trial with ``seed``."""
        c = self.config
        return self._train_config(steps=c.steps, lr=c.lr, augment=c.augment and c.finetune == "all",
                                  eval_every=c.eval_every, seed=seed)

    def run(self, loss: nn.Module, *, seed: int,
            on_eval: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
        """Fine-tune a fresh copy of the warm start with ``loss``; return the final metrics.

        ``on_eval(step, metrics)`` is called at each of ``eval_steps`` with the exact metrics on
        the proxy-validation split; an exception it raises (pruning) propagates.
        ``NonFiniteLossError`` propagates when the loss becomes NaN or infinite.
        """
        if not isinstance(loss, nn.Module):
            raise InvalidTypeError(f"loss must be a torch.nn.Module, but got {type(loss).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidValueError(f"seed must be a non-negative int, but got {seed=}")
        started = time.perf_counter()
        model = self._initial_model(seed)
        train, val = self._train, self._val
        if self.config.finetune == "last":
            train, val = self._features()
            model = UNetTail(model)
        compiles_before = compile_totals()
        with compile_losses(self.config.compile_loss):
            result = fit(model, loss, train, config=self.train_config(seed), eval_data=val,
                         metrics=self.config.metrics, tol=self.config.tol,
                         drop_bg=self.config.drop_bg, on_eval=on_eval,
                         progress=False)
        compiles_after = compile_totals()
        self.last_run = {"wall_time": time.perf_counter() - started,
                         "seconds_per_step": result.seconds_per_step,
                         "eval_time": result.eval_time,
                         "compiles": compiles_after[0] - compiles_before[0],
                         "compile_time": compiles_after[1] - compiles_before[1]}
        return result.metrics


def build_proxy(config: Mapping[str, Any] | ProxyConfig, *, cache_dir: Path | str) -> Proxy:
    """A :class:`Proxy` from a :class:`ProxyConfig` or a dict of its fields (unknown keys are an
    error); ``cache_dir`` holds the warm-start checkpoints."""
    if not isinstance(config, ProxyConfig):
        config = ProxyConfig.from_dict(config)
    return Proxy(config, cache_dir=Path(cache_dir))
