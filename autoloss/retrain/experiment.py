"""A retraining experiment: the flat options of ``autoloss compare`` / ``autoloss train`` (flags
and experiment file merged) checked and built into one frozen :class:`Experiment`.

An experiment file is flat (no includes): the keys of :data:`EXPERIMENT_KEYS` plus every
:class:`autoloss.train.TrainConfig` field except ``seed`` (runs are seeded 0..seeds-1, or by
``train --seed``). Unknown keys are an error with a did-you-mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoloss.core.metrics import check_tol
from autoloss.data import data_slug
from autoloss.errors import InvalidValueError
from autoloss.train.trainer import TrainConfig
from autoloss.train.user_models import ModelSpec, check_model_spec
from autoloss.utils.trust import require_trusted_reference
from autoloss.utils.typed_fields import (
    at_least,
    check_fields,
    converted,
    one_of,
    reject_unknown,
)
from autoloss.utils.yaml_files import read_mapping

__all__ = ["DEFAULT_TRAIN", "DEFAULT_WIDTH", "EXPERIMENT_KEYS", "PROTOCOLS", "Experiment",
           "experiment_from_dict", "read_experiment"]

#: experiment keys that are not TrainConfig fields -> meaning (their types: the annotations of
#: :class:`Experiment`)
EXPERIMENT_KEYS: dict[str, str] = {
    "losses": "loss specs (presets, baseline names, YAML paths): a list or a comma-separated string",
    "data": "dataset spec",
    "seeds": "runs per loss, seeds 0..seeds-1",
    "model": "unet, deeplab, or your builder build(in_channels, num_classes) -> nn.Module as "
             "'module:function' or 'path/to/file.py:function'",
    "width": "model width (None: the model's default)",
    "depth": "model depth (None: the model's default)",
    "out": "output folder (runs in OUT/runs/<loss>/seed<s>)",
    "report": "compare: folder of the tables and figures (default OUT), so that a sub-panel "
              "reuses another panel's runs without overwriting its report",
    "init_from": "warm-start checkpoint",
    "tol": "boundary tolerance in pixels (BIoU, BF1)",
    "val_split": "split scored during training (None: none)",
    "test_split": "split scored at the end (the reported numbers; train: null scores none)",
    "protocol": "scratch (every run from its initial weights) or finetune (per seed a "
                "cross-entropy model trained first, every loss trains on from it)",
    "pretrain": "finetune protocol: TrainConfig options of the cross-entropy pretraining (the "
                "others as for the runs)",
    "reference": "loss every other is paired with (default cross_entropy)",
    "jobs": "runs trained at once in worker processes",
    "plots": "compare: draw the figures into OUT/plots at the end (autoloss plot OUT)",
}
PROTOCOLS = ("scratch", "finetune")

#: training settings of the commands when neither a flag nor the experiment file sets them:
#: TrainConfig's own defaults but a larger learning rate (short runs from scratch) and fewer
#: evaluations. Sized so that the shapes comparison of the README (3 losses x 2 seeds x 200
#: steps) finishes in a few minutes on 2 CPU cores. Its ``seed`` is replaced per run.
DEFAULT_TRAIN = TrainConfig(steps=300, batch_size=8, lr=0.05, eval_every=100)
DEFAULT_WIDTH = 8


def _train_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed"]


def _loss_list(value: Any, *, name: str) -> tuple[str, ...]:
    """A list of loss specs, or one comma-separated string of them, as a tuple of distinct
    specs."""
    if isinstance(value, str):
        value = [spec.strip() for spec in value.split(",") if spec.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and s for s in value):
        raise InvalidValueError(f"{name} must be a list of loss specs or a comma-separated "
                                f"string, but got {name}={value!r}")
    if len(set(value)) != len(value):
        raise InvalidValueError(f"{name} must be distinct, but got {name}={list(value)}")
    return tuple(value)


def _tolerance(value: Any, *, name: str) -> int:
    return check_tol(value, name=name)


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """A retraining setup (flags and experiment file merged), checked when built. ``train``:
    the runs' training settings (its ``seed`` is replaced by each run's); ``pretrain``: the
    TrainConfig options the finetune protocol's cross-entropy pretraining changes."""

    losses: tuple[str, ...] = field(default=(), metadata=converted(_loss_list))
    data: str = "shapes"
    seeds: int = field(default=3, metadata=at_least(1))
    model: ModelSpec = "unet"
    width: int | None = field(default=DEFAULT_WIDTH, metadata=at_least(1))
    depth: int | None = field(default=None, metadata=at_least(1))
    out: Path | str | None = None
    report: Path | str | None = None
    init_from: Path | str | None = None
    tol: int = field(default=5, metadata=converted(_tolerance))
    val_split: str | None = "val"
    test_split: str | None = "test"
    protocol: str = field(default="scratch", metadata=one_of(*PROTOCOLS))
    pretrain: dict[str, Any] | None = None
    reference: str | None = None
    jobs: int = field(default=1, metadata=at_least(1))
    plots: bool = True
    train: TrainConfig = DEFAULT_TRAIN

    def __post_init__(self) -> None:
        check_fields(self)
        check_model_spec(self.model)
        self._check_protocol()

    def _check_protocol(self) -> None:
        """``pretrain`` belongs to the finetune protocol, which excludes ``init_from``; its
        options are TrainConfig fields (kept as the TrainConfig they make has them)."""
        if self.pretrain is not None:
            if self.protocol != "finetune":
                raise InvalidValueError("'pretrain' configures the finetune protocol; set "
                                        "'protocol: finetune' or remove it")
            reject_unknown(self.pretrain, _train_fields(), where="pretrain: ")
            try:
                built = dataclasses.replace(self.train, **self.pretrain)
            except ValueError as err:
                raise InvalidValueError(f"pretrain: {err}") from None
            object.__setattr__(self, "pretrain", {k: getattr(built, k) for k in self.pretrain})
        if self.protocol == "finetune" and self.init_from is not None:
            raise InvalidValueError("init_from and protocol finetune exclude each other (the "
                                    "finetune protocol starts each seed from its own "
                                    "cross-entropy model)")

    def train_config(self, *, seed: int) -> TrainConfig:
        """The training settings of the run with ``seed``."""
        return dataclasses.replace(self.train, seed=seed)

    def pretrain_config(self, *, seed: int) -> TrainConfig | None:
        """The cross-entropy pretraining config of the finetune protocol (None for scratch):
        the runs' options with those under ``pretrain`` replacing them."""
        if self.protocol != "finetune":
            return None
        return dataclasses.replace(self.train, **(self.pretrain or {}), seed=seed)

    def out_dir(self) -> Path:
        """The runs' folder: ``out``, default ``results/retrain-<data>``."""
        return Path(self.out) if self.out else Path("results") / f"retrain-{data_slug(self.data)}"


def experiment_from_dict(values: Mapping[str, Any], *, source: str = "experiment") -> Experiment:
    """Check flat options (experiment keys and TrainConfig fields) and build an
    :class:`Experiment` (errors name ``source``)."""
    if "seed" in values:
        raise InvalidValueError(f"{source}: 'seed' is set per run: use 'seeds: N' (compare runs "
                                f"seeds 0..N-1) or 'autoloss train --seed S'")
    train_fields = _train_fields()
    reject_unknown(values, [*EXPERIMENT_KEYS, *train_fields], where=f"{source}: ")
    train = {k: v for k, v in values.items() if k in train_fields}
    options = {k: v for k, v in values.items() if k not in train_fields}
    try:
        return Experiment(**options, train=dataclasses.replace(DEFAULT_TRAIN, **train))
    except (ValueError, TypeError) as err:
        raise InvalidValueError(f"{source}: {err}") from None


def read_experiment(path: str | Path) -> dict[str, Any]:
    """The raw options of a flat experiment YAML (checked for unknown keys; see
    :func:`experiment_from_dict` to build an :class:`Experiment`)."""
    data = read_mapping(path)
    # a module builder would be imported: a shared file may name one only with --trust-code
    require_trusted_reference(data.get("model"), option="model", source=str(path))
    experiment_from_dict(data, source=str(path))
    return data
