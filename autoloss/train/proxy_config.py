"""The options of proxy training: :class:`ProxyConfig` (keyword-only, checked when built; the
rules sit on its fields, :mod:`autoloss.utils.typed_fields`). The proxy itself:
:mod:`autoloss.train.proxy`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from autoloss.core.metrics import METRIC_NAMES, MetricOptions, check_tol
from autoloss.core.programs import is_user_reference
from autoloss.data import parse_spec
from autoloss.errors import InvalidTypeError, InvalidValueError, did_you_mean
from autoloss.train.user_models import check_model_spec, model_name
from autoloss.utils.typed_fields import (
    at_least,
    check_fields,
    converted,
    from_mapping,
    one_of,
    parse_size,
    positive,
)

__all__ = ["ProxyConfig"]

_FINETUNE = ("all", "last")  # every layer on augmented images / last UNet block on cached features


def _fail(name: str, value: Any, expected: str) -> None:
    raise InvalidValueError(f"proxy option {name} must be {expected}, but got {name}={value!r}")


def _dataset_spec(value: Any, *, name: str) -> Any:
    """A dataset spec :func:`autoloss.data.parse_spec` reads."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidValueError(f"{name} must be a dataset spec string such as 'shapes' or "
                                f"'camvid:PATH', but got {name}={value!r}")
    try:
        parse_spec(value)
    except ValueError as err:
        raise InvalidValueError(f"{name}: {err}") from None
    return value


def _proxy_split(value: Any, *, name: str) -> Any:
    """Any split but ``test`` (kept for reporting)."""
    if value == "test":
        raise InvalidValueError(f"{name} must be a proxy-validation split other than 'test' (the "
                                f"test split is kept for reporting), but got {name}={value!r}")
    return value


def _tolerance(value: Any, *, name: str) -> int:
    return check_tol(value, name=name)


def _init_file(value: Any, *, name: str) -> Any:
    """The path of the weights every trial starts from, as a string (None: the warm start)."""
    if isinstance(value, Path):
        value = str(value)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InvalidValueError(f"{name} must be the path of a state dict or checkpoint file, "
                                f"or None, but got {name}={value!r}")
    return value


def _metric_names(value: Any, *, name: str) -> tuple[str, ...] | None:
    """A metric name or a list of them as a tuple without repeats; a user program
    (``file.py:name``) is refused now when untrusted, not after the warm start has trained."""
    if value is None:
        return None
    if not isinstance(value, (str, list, tuple)) or not value:
        raise InvalidValueError(f"{name} must be a metric name, a non-empty list of metric "
                                f"names, or None, but got {name}={value!r}")
    metrics = [value] if isinstance(value, str) else list(value)
    for m in metrics:
        if isinstance(m, str) and is_user_reference(m):
            from autoloss.utils.trust import require_trusted

            require_trusted(m, source=f"proxy option {name}")
        elif m not in METRIC_NAMES:
            raise InvalidValueError(f"{name} must be one of {list(METRIC_NAMES)}, but got "
                                    f"{name}={m!r}{did_you_mean(m, METRIC_NAMES)}")
    return tuple(dict.fromkeys(metrics))


@dataclass(frozen=True, kw_only=True)
class ProxyConfig:
    """Every knob of proxy training (keyword-only, validated; errors name the field).

    Data: ``data`` (a spec for :func:`autoloss.data.load_dataset`); ``size`` (``(H, W)`` or an
    int for a square) resizes it; with ``size=None`` the native size is divided by the smallest
    integer that brings the larger side to at most ``max_side`` (None: native size). ``subset``:
    train images used for fine-tuning (None: all; drawn with ``subset_seed``). ``eval_split``:
    the proxy-validation split (never ``test``); ``eval_subset``: score only its first images.
    ``metrics``: exact metrics to report (None: all of ``METRIC_NAMES``; naming only the search
    target saves evaluation time); a user program ``file.py:name`` is accepted too. ``tol``:
    boundary tolerance in pixels; ``drop_bg``: class 0 left out of the boundary metrics (BIoU
    band, BF1 mean), as the target's surrogate does (the search sets it from its space).

    Model: ``model``: ``"unet"`` / ``"deeplab"`` (sized by ``width``, ``depth``, ``norm``), or
    your own builder ``build(in_channels, num_classes) -> nn.Module``: the callable,
    ``"module:function"`` or ``"path/to/file.py:function"`` (a trusted file;
    :mod:`autoloss.train.user_models`). ``init``: a state dict or autoloss checkpoint file the
    trials start from instead of the cross-entropy warm start (no warm start is trained then).

    Fine-tuning with the candidate loss: ``steps``, ``batch_size``, ``crop`` (``(h, w)``, an
    int, or None for whole images), ``lr`` (poly schedule), ``optimizer`` (``sgd`` / ``adamw``),
    ``grad_clip``, ``augment``, ``eval_every``.

    Warm start with cross-entropy: ``warm_start`` (False: every trial trains from scratch, the
    initial weights seeded with the trial's seed), ``warm_start_steps``, ``warm_start_lr``,
    ``warm_start_seed``.

    Execution: ``device`` (None: CUDA if available), ``num_threads`` (torch CPU threads),
    ``compile_loss`` (surrogates with ``compile="auto"`` run as compiled graphs from the first
    step: True; eager: False; ``"auto"``, the default: their own rule, compile once the eager
    passes have cost ~10 s in the process, see :mod:`autoloss.losses.compiled`;
    ``AUTOLOSS_COMPILE=0`` still forces eager). On a CPU the loss is a small share of a proxy
    step (``results/proxy_cost.md``: compiled and eager steps equal within 5 %), so compiling from
    the first step only adds its 10-35 s per worker; ``"auto"`` spends at most that once, late.
    """

    data: str = field(default="shapes", metadata=converted(_dataset_spec))
    size: tuple[int, int] | None = field(default=None, metadata=converted(parse_size))
    max_side: int | None = field(default=128, metadata=at_least(1))
    subset: int | None = field(default=None, metadata=at_least(1))
    subset_seed: int = field(default=0, metadata=at_least(0))
    eval_split: str = field(default="val", metadata=converted(_proxy_split))
    eval_subset: int | None = field(default=None, metadata=at_least(1))
    metrics: tuple[str, ...] | None = field(default=None, metadata=converted(_metric_names))
    # the one default (autoloss.core.metrics.MetricOptions)
    tol: int = field(default=MetricOptions.tol, metadata=converted(_tolerance))
    drop_bg: bool = MetricOptions.drop_bg
    model: str | Callable[[int, int], nn.Module] = "unet"
    init: str | None = field(default=None, metadata=converted(_init_file))
    width: int = field(default=16, metadata=at_least(1))
    depth: int = field(default=3, metadata=at_least(1))
    norm: str = field(default="batch", metadata=one_of("batch", "group"))
    finetune: str = field(default="all", metadata=one_of(*_FINETUNE))
    steps: int = field(default=60, metadata=at_least(1))
    batch_size: int = field(default=8, metadata=at_least(1))
    crop: tuple[int, int] | None = field(default=None, metadata=converted(parse_size))
    lr: float = field(default=0.03, metadata=positive())
    optimizer: str = field(default="sgd", metadata=one_of("sgd", "adamw"))
    grad_clip: float | None = field(default=None, metadata=positive())
    augment: bool = True
    eval_every: int = field(default=30, metadata=at_least(1))
    warm_start: bool = True
    warm_start_steps: int = field(default=2000, metadata=at_least(1))
    warm_start_lr: float = field(default=0.05, metadata=positive())
    warm_start_seed: int = field(default=0, metadata=at_least(0))
    device: str | None = None
    num_threads: int | None = field(default=None, metadata=at_least(1))
    compile_loss: bool | str = field(default="auto", metadata=one_of(True, False, "auto"))

    def __post_init__(self) -> None:
        check_fields(self, where="proxy option ")
        check_model_spec(self.model, option="proxy option model")
        self._check_finetune()

    def _check_finetune(self) -> None:
        """``finetune='last'`` splits autoloss's UNet and trains on its cached features."""
        if self.finetune != "last":
            return
        if self.model != "unet":
            _fail("finetune", self.finetune, f"'all' for model={model_name(self.model)!r} ('last' "
                  "splits autoloss's UNet)")
        if not self.warm_start and self.init is None:
            _fail("finetune", self.finetune, "'all' with warm_start=False and no init (a random "
                  "trunk has no features)")
        if self.crop is not None:
            _fail("crop", self.crop, "None with finetune='last' (cached features are not "
                  "augmented)")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> ProxyConfig:
        """Build from a plain dict (experiment YAML, CLI); an unknown key is an error with a
        did-you-mean suggestion."""
        if not isinstance(options, Mapping):
            raise InvalidTypeError(f"proxy config must be a dict or ProxyConfig, but got "
                                   f"{type(options).__name__}")
        return from_mapping(cls, options, what="proxy option")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists; a builder callable by its
        ``module:qualname``)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["model"] = model_name(self.model)
        return json.loads(json.dumps(values))
