"""Checkpoint files: what :func:`autoloss.train.trainer.fit` writes and everything that reads them.

A checkpoint is a ``torch.save`` dict (format :data:`CHECKPOINT_FORMAT`): ``model`` (state
dict), ``model_config`` (:func:`autoloss.train.models.config_to_dict`), ``optimizer`` (None once
the run is finished), ``step``, ``train_config``, ``loss`` (its spec), ``rng``, ``history``,
``elapsed``. It is written atomically and read with ``weights_only=True``, so no code runs from a file.
"""

from __future__ import annotations

import errno
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoloss.errors import InvalidValueError, MissingFileError
from autoloss.train.models import build_model, config_from_dict, pick_device
from autoloss.utils.atomic import write_atomic

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "read_checkpoint", "warm_start",
           "write_checkpoint"]

CHECKPOINT_FORMAT = 1


def write_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to ``path`` atomically (:mod:`autoloss.utils.atomic`). torch reports a
    failed write (a full disk) as ``RuntimeError: [enforce fail at inline_container.cc...]``: it
    becomes an ``OSError`` naming ``path``."""
    def save(tmp: Path) -> None:
        try:
            torch.save(payload, tmp)
        except RuntimeError as err:
            if "inline_container" not in str(err) and "PytorchStreamWriter" not in str(err):
                raise
            free = shutil.disk_usage(Path(tmp).parent).free
            raise OSError(errno.ENOSPC if free < 2**20 else errno.EIO,
                          f"cannot write the checkpoint ({free / 1e6:.1f} MB free on its disk; "
                          f"torch: {str(err).splitlines()[0].strip()})", str(path)) from err

    write_atomic(path, save)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict stored by ``fit`` (tensors on CPU); a bare ``state_dict`` file becomes
    ``{"model": state_dict}``. Loads with ``weights_only=True`` (no code runs from the file)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if isinstance(err, EOFError):
            first = "the file is empty or truncated"
        if "weights only load failed" in first.lower():  # torch's advice to unpickle: not ours
            first = ("not a torch.save file of tensors and plain data (autoloss loads "
                     "checkpoints with weights_only=True and never unpickles code)")
        raise InvalidValueError(f"cannot read checkpoint {path}: {first}; expected a file "
                                f"written by autoloss train or torch.save") from None
    if not isinstance(data, dict):
        raise InvalidValueError(f"{path} is not a checkpoint: it holds a {type(data).__name__}")
    if "model" not in data:
        if data and all(isinstance(v, torch.Tensor) for v in data.values()):
            return {"model": data}
        raise InvalidValueError(f"{path} is not a checkpoint: no 'model' entry (keys {sorted(data)[:8]})")
    version = data.get("format", CHECKPOINT_FORMAT)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidValueError(f"{path}: checkpoint format must be an int, but got "
                                f"format={version!r}; the file was not written by autoloss")
    if version > CHECKPOINT_FORMAT:
        raise InvalidValueError(f"{path} has checkpoint format {data['format']}, newer than this "
                         f"version of autoloss reads ({CHECKPOINT_FORMAT}); upgrade autoloss")
    return data


def load_checkpoint(path: str | Path, *, device: str | None = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a ``fit`` checkpoint and load its weights.

    Returns ``(model in eval mode on device, meta)``; ``meta`` holds everything else in the file
    except the optimizer state: ``step``, ``train_config``, ``loss`` (the loss spec, if the loss
    had ``to_dict()``), ``history``, ``model_config``, ``elapsed``.
    """
    data = read_checkpoint(path)
    if not data.get("model_config"):
        raise InvalidValueError(f"{path} does not record its model config (the model was not built by "
                         f"autoloss.train.models); build the model yourself and use warm_start()")
    try:
        model = build_model(config_from_dict(dict(data["model_config"])))
        model.load_state_dict(data["model"])
    except (TypeError, ValueError, RuntimeError) as err:  # a crafted or edited file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InvalidValueError(f"{path}: its model config and weights do not fit together "
                                f"({first}); the file was edited or not written by autoloss "
                                f"train") from None
    meta = {k: v for k, v in data.items() if k not in ("model", "optimizer", "rng")}
    return model.to(pick_device(device)).eval(), meta


def warm_start(model: nn.Module, path: str | Path) -> list[str]:
    """Copy into ``model`` every tensor of the checkpoint whose name and shape match.

    Tensors that do not match (e.g. the classifier when the number of classes differs) keep
    their values; their names are returned (and a warning lists them). Raises if less than
    half of the model's weights (by element count) would be copied.
    """
    stored = read_checkpoint(path)["model"]
    own = model.state_dict()
    matched = {k: v for k, v in stored.items() if k in own and own[k].shape == v.shape}
    share = sum(v.numel() for v in matched.values()) / max(1, sum(v.numel() for v in own.values()))
    if share < 0.5:
        raise InvalidValueError(f"only {share:.0%} of the model's weights match {path} by name and "
                         f"shape (a warm start needs at least half); it was trained for another "
                         f"architecture or size")
    skipped = sorted(set(own) - set(matched))
    model.load_state_dict(matched, strict=False)
    if skipped:
        warnings.warn(f"warm start from {path}: {len(skipped)} tensors kept their initial values "
                      f"(missing or of another shape): {skipped[:6]}", stacklevel=2)
    return skipped
