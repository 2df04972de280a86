"""Your own network in autoloss's proxy, training and retraining: the model hook.

A **model builder** is any callable ``build(in_channels, num_classes) -> nn.Module`` (a
function, or an ``nn.Module`` class with that signature). The module it returns maps normalised
images ``[N, in_channels, H, W]`` to logits ``[N, num_classes, h, w]``; logits at a lower
resolution (``h <= H``, ``w <= W``, e.g. a 1/4-resolution decoder) are upsampled bilinearly to
the labels' size before the loss and the metrics (:func:`autoloss.train.models.logits_at`).

Wherever autoloss takes a model (``ProxyConfig(model=...)``, ``train_run``/``compare_losses``
``model=``, the ``model:`` key of experiment files, ``--proxy-model`` / ``--model`` on the
command line) it takes, next to the built-in names ``unet`` and ``deeplab``:

- in Python: the builder itself (recorded by its ``module:qualname``);
- anywhere: ``"module:function"`` (imported from ``sys.path``) or ``"path/to/file.py:function"``
  (that file is run, so it must be trusted: ``--trust-code``, :func:`autoloss.trust_code`;
  one named in a command-line flag is; :mod:`autoloss.utils.trust`).

The builder is called with the initial weights seeded (:class:`ModelHook`), so a seed gives
the same network every time, as :func:`autoloss.train.models.build_model` does. ``width``,
``depth`` and ``norm`` configure the built-in models only.

Example:
    >>> def build(in_channels, num_classes):
    ...     return nn.Conv2d(in_channels, num_classes, 3, padding=1)
    >>> make_model(build, in_channels=3, num_classes=4, seed=0)(torch.zeros(1, 3, 8, 8)).shape
    torch.Size([1, 4, 8, 8])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoloss.errors import InvalidTypeError, InvalidValueError, did_you_mean
from autoloss.train.models import config_to_dict, model_from_name
from autoloss.utils.trust import (
    code_file,
    import_reference,
    is_reference,
    reference_name,
    reference_sha256,
    require_trusted,
)

__all__ = ["BUILTIN_MODELS", "ModelHook", "ModelSpec", "check_model_spec", "is_builtin",
           "make_model", "model_hook", "model_identity", "model_name"]

BUILTIN_MODELS = ("unet", "deeplab")

#: a built-in name, a ``module:function`` / ``file.py:function`` reference or a builder
ModelSpec = str | Callable[[int, int], nn.Module]


def is_builtin(model: Any) -> bool:
    """Whether ``model`` names one of :data:`BUILTIN_MODELS`."""
    return isinstance(model, str) and model in BUILTIN_MODELS


def check_model_spec(model: Any, *, option: str = "model") -> None:
    """Check the form of a model spec without importing anything (a file reference must name
    a trusted file that exists); errors name ``option``."""
    if is_builtin(model) or callable(model):
        return
    if not is_reference(model):
        raise InvalidValueError(
            f"{option} must be one of {list(BUILTIN_MODELS)}, a builder 'module:function' or "
            f"'path/to/file.py:function', or (Python) a callable build(in_channels, num_classes),"
            f" but got {option}={model!r}{did_you_mean(model, BUILTIN_MODELS)}")
    file = code_file(model)
    if file is not None:
        if not file.is_file():
            raise InvalidValueError(f"{option}={model!r}: the file {str(file)!r} does not exist")
        require_trusted(model, source=f"option {option}")


def model_name(model: ModelSpec) -> str:
    """How a model spec is recorded: a name or reference as given, a builder by its
    ``module:qualname``."""
    return model if isinstance(model, str) else reference_name(model)


@dataclass(frozen=True)
class ModelHook:
    """A user's model builder: ``name`` (the reference, or the callable's ``module:qualname``),
    ``build`` (the callable)."""

    name: str
    build: Callable[..., Any]

    def __call__(self, in_channels: int, num_classes: int, *, seed: int | None = None
                 ) -> nn.Module:
        """``build(in_channels, num_classes)``, its initial weights seeded with ``seed`` (the
        global torch RNG is left untouched); checked to be an ``nn.Module``."""
        try:
            inspect.signature(self.build).bind(in_channels, num_classes)
        except TypeError as err:
            raise InvalidTypeError(f"model builder {self.name!r} must take (in_channels, "
                                   f"num_classes), but its signature does not: {err}") from None
        except ValueError:  # no signature (a builtin): call it and see
            pass
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = self.build(in_channels, num_classes)
        if not isinstance(model, nn.Module):
            raise InvalidTypeError(f"model builder {self.name!r} must return a torch.nn.Module, "
                                   f"but build(in_channels={in_channels}, num_classes="
                                   f"{num_classes}) returned {type(model).__name__}")
        return model


def model_hook(model: ModelSpec, *, option: str = "model") -> ModelHook:
    """The :class:`ModelHook` of a user model spec (a reference is imported here: one-line
    errors for a missing module, file or function, naming ``option``)."""
    check_model_spec(model, option=option)
    if is_builtin(model):
        raise InvalidValueError(f"{option}={model!r} is a built-in model, not a builder")
    if callable(model):
        return ModelHook(reference_name(model), model)
    build = import_reference(model, what=option)
    if not callable(build):
        raise InvalidTypeError(f"{option}={model!r} must name a callable build(in_channels, "
                               f"num_classes), but it is a {type(build).__name__}")
    return ModelHook(model, build)


def make_model(model: ModelSpec, *, in_channels: int, num_classes: int,
               width: int | None = None, depth: int | None = None,
               seed: int | None = None) -> nn.Module:
    """A built-in model (``width`` / ``depth`` as in
    :func:`~autoloss.train.models.model_from_name`) or a user's (``build(in_channels,
    num_classes)``), initial weights seeded with ``seed``."""
    if is_builtin(model):
        return model_from_name(model, in_channels=in_channels, num_classes=num_classes,
                               width=width, depth=depth, seed=seed)
    return model_hook(model)(in_channels, num_classes, seed=seed)


def model_identity(model: ModelSpec, net: nn.Module | None = None) -> dict[str, Any]:
    """What a run, a cache key or a loss file records of a model: a built-in's config
    (:func:`~autoloss.train.models.config_to_dict` of ``net.config``; without ``net``, its
    name), else ``{"builder": name, "sha256": of its file or None}`` (nothing is imported)."""
    if is_builtin(model):
        return config_to_dict(net.config) if net is not None else {"arch": model}
    sha = reference_sha256(model) if isinstance(model, str) else None
    return {"builder": model_name(model), "sha256": sha}
