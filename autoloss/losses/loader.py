"""One entry point for every loss: ``load_loss(spec, **overrides)``, and ``save_loss``.

A spec is one of:

- a preset name (``asl-voc-miou``, ``soft-miou``, ``paddleseg-lovasz-softmax-ce``, ...);
- a baseline loss name (``cross_entropy``, ``lovasz_softmax``, ...), i.e. ``{"name": NAME}``;
- a path to a loss YAML file (``.yaml`` / ``.yml``);
- a dict with the schema below.

Schema (version 1; every YAML file is readable on its own, there are no includes)::

    autoloss_schema: 1              # optional in dicts, written by save_loss
    name: surrogate                 # or a baseline loss name
    metric: miou                    # surrogate only: built-in metric or "file.py:program"
    ignore_index: 255               # options of that loss, at top level
    tol: 5
    curves:                         # surrogate only: one entry per curve of the metric program
      inter: {kind: bezier, points: [x1, y1, x2, y2, x3, y3]}
      union: {kind: linear, knots_x: [...], knots_y: [...]}
    provenance: {...}               # optional, free-form (dataset, study, trial, score, ...)

or a weighted combination ``{"combine": [{"name": ..., "weight": 0.2, ...}, ...]}``.

The ignore index belongs to the data, not to the loss: a loss file exported by ``autoloss
search`` carries none (its search dataset's is under ``provenance.dataset_options``), so pass
your data's at use time, ``load_loss(path, ignore_index=255)``; without one, a target label
outside ``[0, C)`` is an error that says so. A file that does fix the ignore index of the
dataset it was searched on (older exports) loads with a warning unless ``ignore_index`` is
passed.
``overrides`` replace top-level options (for a combination: in every component that has them).
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from autoloss.errors import (
    AutoLossError,
    InvalidTypeError,
    InvalidValueError,
    MissingFileError,
    did_you_mean,
)
from autoloss.losses.baselines import BASELINES
from autoloss.losses.combine import CombinedLoss
from autoloss.losses.presets import PRESETS
from autoloss.losses.surrogate import SurrogateLoss
from autoloss.utils.atomic import write_text_atomic
from autoloss.utils.typed_fields import reject_unknown
from autoloss.utils.yaml_files import load_yaml

__all__ = ["DATASET_OPTIONS", "SCHEMA_VERSION", "load_loss", "loss_names", "portable_spec",
           "read_spec", "save_loss"]

SCHEMA_VERSION = 1
_META_KEYS = ("autoloss_schema", "provenance", "description")
#: options that belong to the data a loss is used on, not to the loss: an exported loss file
#: records them under ``provenance.dataset_options`` only, and the user passes their own
DATASET_OPTIONS = ("ignore_index",)


def _parts(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    parts = spec.get("combine") if "combine" in spec else [spec]
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def portable_spec(spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A copy of ``spec`` without the dataset-bound options (:data:`DATASET_OPTIONS`, in every
    part of a combination), and those options as found (the first non-None value of each)."""
    out = copy.deepcopy(dict(spec))
    found: dict[str, Any] = {}
    for part in _parts(out):
        for key in DATASET_OPTIONS:
            if key in part:
                value = part.pop(key)
                if value is not None:
                    found.setdefault(key, value)
    return out, found


def _warn_dataset_bound(data: Mapping[str, Any], meta: Mapping[str, Any], spec: Any,
                        overrides: Mapping[str, Any]) -> None:
    """A loss file exported by an older autoloss search fixes its dataset's ignore index; say
    so unless the caller sets one."""
    provenance = meta.get("provenance")
    if not isinstance(provenance, Mapping) or provenance.get("source") != "autoloss search":
        return
    for key in DATASET_OPTIONS:
        values = [part[key] for part in _parts(data) if part.get(key) is not None]
        if values and key not in overrides:
            warnings.warn(
                f"loss {str(spec)!r} sets {key}={values[0]}, recorded from the dataset it was "
                f"searched on ({provenance.get('dataset')}); on other data pixels labelled "
                f"{values[0]} get no gradient. Pass your data's: load_loss(path, {key}=<your "
                f"void label, or None>)", stacklevel=3)


def loss_names() -> dict[str, list[str]]:
    """Every name ``load_loss`` accepts, by kind."""
    return {"presets": sorted(PRESETS), "baselines": sorted(BASELINES) + ["surrogate"]}


def read_spec(spec: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a preset name, baseline name, YAML path or dict into a spec dict (a copy)."""
    if isinstance(spec, Mapping):
        return copy.deepcopy(dict(spec))
    if not isinstance(spec, (str, Path)):
        raise InvalidTypeError(f"spec must be a name, a path or a dict, but got {type(spec).__name__}")
    text = str(spec)
    if text in PRESETS:
        return copy.deepcopy(PRESETS[text])
    if text in BASELINES or text == "surrogate":
        return {"name": text}
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise MissingFileError(f"loss file {str(path)!r} does not exist")
        data = load_yaml(path)
        if not isinstance(data, dict):
            raise InvalidValueError(
                f"loss file {str(path)!r} must hold a mapping (name: ..., ...), but got "
                f"{type(data).__name__}"
            )
        return data
    choices = sorted(PRESETS) + sorted(BASELINES)
    raise InvalidValueError(
        f"unknown loss {text!r}: expected a preset {sorted(PRESETS)}, a baseline "
        f"{sorted(BASELINES)}, or a path to a .yaml loss file{did_you_mean(text, choices)}"
    )


def _accepted_options(name: str) -> list[str]:
    cls = SurrogateLoss if name == "surrogate" else BASELINES[name]
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p != "self"]


def _build_single(spec: dict[str, Any]) -> nn.Module:
    name = spec.pop("name", None)
    if name is None:
        raise InvalidValueError(f"a loss spec needs a 'name' (or 'combine'), but got keys {sorted(spec)}")
    if name != "surrogate" and (not isinstance(name, str) or name not in BASELINES):
        choices = sorted(BASELINES) + ["surrogate"]
        raise InvalidValueError(f"unknown loss name {name!r}: expected one of {choices}"
                         f"{did_you_mean(str(name), choices)}")
    reject_unknown(spec, _accepted_options(name), where=f"loss {name!r}: ")
    if name == "surrogate":
        if "metric" not in spec:
            raise InvalidValueError("a 'surrogate' loss spec needs a 'metric' (e.g. metric: miou)")
        return SurrogateLoss(spec.pop("metric"), **spec)
    return BASELINES[name](**spec)


def _apply_overrides(spec: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    if "combine" in spec:
        for key, value in overrides.items():
            takers = [part for part in spec["combine"]
                      if isinstance(part, dict) and key in _accepted_options(part.get("name", ""))]
            if not takers:
                raise InvalidValueError(f"override {key!r} is an option of none of the combined losses")
            for part in takers:
                part[key] = value
    else:
        spec.update(overrides)


def _metric_references(data: Any) -> list[str]:
    """Every ``metric:`` string of a spec, combinations included."""
    if isinstance(data, Mapping):
        found = [data["metric"]] if isinstance(data.get("metric"), str) else []
        return found + [ref for value in data.values() for ref in _metric_references(value)]
    if isinstance(data, list):
        return [ref for value in data for ref in _metric_references(value)]
    return []


def load_loss(spec: str | Path | Mapping[str, Any], *, trust_code: bool = False,
              **overrides: Any) -> nn.Module:
    """Build a loss module from a preset, baseline name, YAML file or spec dict.

    Args:
        spec: see the module docstring.
        trust_code: let the user metric files the spec names (``metric: file.py:name``) run;
            without it (or another opt-in, :mod:`autoloss.utils.trust`) such a spec raises
            :class:`~autoloss.utils.trust.UntrustedCodeError` before any of its code runs.
        **overrides: top-level options to replace, e.g. ``ignore_index=255, tol=2``. Each is
            checked against the loss's own options (a typo is an error, with a suggestion).

    Returns:
        an ``nn.Module`` called as ``loss(logits [N,C,H,W], target [N,H,W]) -> scalar``, with a
        ``to_dict()`` method giving its spec back and a ``provenance`` attribute (dict or None).
    """
    data = read_spec(spec)
    try:
        return _load_spec(data, trust_code=trust_code, spec=spec, overrides=overrides)
    except AutoLossError as err:  # a loss file's option: say which file
        if _is_file_spec(spec) and str(spec) not in str(err):
            err.args = (f"{spec}: {err}",)
        raise


def _is_file_spec(spec: str | Path | Mapping[str, Any]) -> bool:
    """Whether ``spec`` names a loss file (not a preset, a baseline or a dict)."""
    return (isinstance(spec, (str, Path)) and str(spec) not in PRESETS
            and str(spec) not in BASELINES and str(spec) != "surrogate")


def _load_spec(data: dict[str, Any], *, trust_code: bool, spec: str | Path | Mapping[str, Any],
               overrides: Mapping[str, Any]) -> nn.Module:
    """:func:`load_loss` after the spec is read: the trust gate, the schema, then the module."""
    if trust_code:
        from autoloss.utils.trust import code_file
        from autoloss.utils.trust import trust_code as trust

        trust(*[ref for ref in _metric_references(data) if code_file(ref) is not None])
    version = data.get("autoloss_schema", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InvalidValueError(
            f"loss spec schema version must be an int <= {SCHEMA_VERSION}, but got {version!r} "
            "(written by a newer autoloss?)"
        )
    meta = {key: data.pop(key) for key in _META_KEYS if key in data}
    _warn_dataset_bound(data, meta, spec, overrides)
    _apply_overrides(data, overrides)
    if "combine" in data:
        extra = sorted(set(data) - {"combine"})
        if extra:
            raise InvalidValueError(f"a 'combine' spec takes no other keys, but got {extra}")
        parts = data["combine"]
        if not isinstance(parts, list):
            raise InvalidValueError(f"'combine' must be a list of loss specs, but got {type(parts).__name__}")
        losses, weights = [], []
        for part in parts:
            part = dict(part)
            weights.append(part.pop("weight", 1.0))
            losses.append(load_loss(part))
        module: nn.Module = CombinedLoss(losses, weights)
    else:
        module = _build_single(data)
    module.provenance = meta.get("provenance")
    return module


def save_loss(loss: nn.Module | Mapping[str, Any], path: str | Path, *,
              provenance: Mapping[str, Any] | None = None) -> Path:
    """Write a loss (module with ``to_dict()`` or spec dict) as a self-describing YAML file.

    ``load_loss(path)`` gives back an equal loss (``save -> load`` round-trips exactly).
    """
    spec = dict(loss) if isinstance(loss, Mapping) else loss.to_dict()
    spec.pop("autoloss_schema", None)
    out: dict[str, Any] = {"autoloss_schema": SCHEMA_VERSION, **spec}
    prov = provenance if provenance is not None else getattr(loss, "provenance", None)
    if prov is not None:
        out["provenance"] = dict(prov)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, yaml.safe_dump(out, sort_keys=False, default_flow_style=None))
    return path
