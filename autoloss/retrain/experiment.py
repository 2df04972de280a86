"""A retraining experiment: the flat options of ``autoloss compare`` / ``autoloss train`` (flags
and experiment file merged) checked and built into one frozen :class:`Experiment`.

An experiment file is flat (no includes): the keys of :data:`EXPERIMENT_KEYS` plus every
:class:`autoloss.train.TrainConfig` field except ``seed`` (runs are seeded 0..seeds-1, or by
``train --seed``). Unknown keys are an error with a did-you-mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoloss.core.metrics import check_tol
from autoloss.errors import InvalidValueError, did_you_mean
from autoloss.train.trainer import TrainConfig
from autoloss.train.user_models import check_model_spec
from autoloss.utils.trust import require_trusted_reference
from autoloss.utils.typed_fields import field_hints, value_type_error
from autoloss.utils.yaml_files import read_mapping

__all__ = ["DEFAULT_TRAIN", "DEFAULT_WIDTH", "EXPERIMENT_KEYS", "PROTOCOLS", "Experiment",
           "experiment_from_dict", "parse_crop", "read_experiment"]

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


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """A retraining setup (flags and experiment file merged). ``train``: the runs' training
    settings (its ``seed`` is replaced by each run's); ``pretrain``: the TrainConfig options
    the finetune protocol's cross-entropy pretraining changes."""

    losses: tuple[str, ...] = ()
    data: str = "shapes"
    seeds: int = 3
    model: str = "unet"
    width: int | None = DEFAULT_WIDTH
    depth: int | None = None
    out: str | None = None
    report: str | None = None
    init_from: str | None = None
    tol: int = 5
    val_split: str | None = "val"
    test_split: str | None = "test"
    protocol: str = "scratch"
    pretrain: dict[str, Any] | None = None
    reference: str | None = None
    jobs: int = 1
    plots: bool = True
    train: TrainConfig = DEFAULT_TRAIN

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
        from autoloss.retrain.compare import data_slug

        return Path(self.out) if self.out else Path("results") / f"retrain-{data_slug(self.data)}"


def parse_crop(value: Any) -> Any:
    """``"HxW"`` / ``"S"`` / ``S`` / ``[H, W]`` -> ``(H, W)`` (None stays None)."""
    if value is None or isinstance(value, (list, tuple)):
        return None if value is None else tuple(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    parts = str(value).lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2):
        raise InvalidValueError(f"crop must be HxW (e.g. 96x128), S, or [H, W], but got crop={value!r}")
    return (dims[0], dims[-1])


def experiment_from_dict(values: Mapping[str, Any], *, source: str = "experiment") -> Experiment:
    """Check flat options (experiment keys and TrainConfig fields) and build an
    :class:`Experiment`; the TrainConfig ones are validated by building a TrainConfig."""
    train_fields = _train_fields()
    known = list(EXPERIMENT_KEYS) + train_fields
    exp: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for key, value in values.items():
        if key == "seed":
            raise InvalidValueError(f"{source}: 'seed' is set per run: use 'seeds: N' (compare runs "
                             f"seeds 0..N-1) or 'autoloss train --seed S'")
        if key in train_fields:
            train[key] = parse_crop(value) if key == "crop" else value
            continue
        if key not in EXPERIMENT_KEYS:
            raise InvalidValueError(f"{source}: unknown option {key!r}{did_you_mean(key, known)}; expected "
                             f"one of {known}")
        hint = (list[str] | str) if key == "losses" else field_hints(Experiment)[key]
        error = value_type_error(key, value, hint)
        if error is not None:
            raise InvalidValueError(f"{source}: {error}")
        exp[key] = value
    if isinstance(exp.get("losses"), str):
        exp["losses"] = [s.strip() for s in exp["losses"].split(",") if s.strip()]
    if "losses" in exp:
        if not all(isinstance(s, str) and s for s in exp["losses"]):
            raise InvalidValueError(f"{source}: losses must be a list of loss specs, but got "
                             f"{exp['losses']!r}")
        exp["losses"] = tuple(exp["losses"])
    if exp.get("protocol", "scratch") not in PROTOCOLS:
        raise InvalidValueError(f"{source}: protocol must be one of {PROTOCOLS}, but got "
                         f"protocol={exp['protocol']!r}")
    if exp.get("pretrain") is not None:
        if exp.get("protocol") != "finetune":
            raise InvalidValueError(f"{source}: 'pretrain' configures the finetune protocol; set "
                             f"'protocol: finetune' or remove it")
        bad = [k for k in exp["pretrain"] if k not in train_fields]
        if bad:
            raise InvalidValueError(f"{source}: pretrain: unknown option {bad[0]!r}"
                             f"{did_you_mean(bad[0], train_fields)}; expected TrainConfig fields "
                             f"{train_fields}")
        exp["pretrain"] = {k: parse_crop(v) if k == "crop" else v
                           for k, v in exp["pretrain"].items()}
    if exp.get("protocol") == "finetune" and exp.get("init_from") is not None:
        raise InvalidValueError(f"{source}: init_from and protocol finetune exclude each other (the "
                         f"finetune protocol starts each seed from its own cross-entropy model)")
    for key, low in (("seeds", 1), ("width", 1), ("depth", 1), ("jobs", 1)):
        if exp.get(key) is not None and exp[key] < low:
            raise InvalidValueError(f"{source}: {key} must be >= {low}, but got {key}={exp[key]!r}")
    if "tol" in exp:
        check_tol(exp["tol"], where=source)
    if "model" in exp:
        check_model_spec(exp["model"], option=f"{source}: model")
    try:
        experiment = Experiment(**exp, train=dataclasses.replace(DEFAULT_TRAIN, **train))
        experiment.pretrain_config(seed=0)
    except (ValueError, TypeError) as err:
        raise InvalidValueError(f"{source}: {err}") from None
    return experiment


def read_experiment(path: str | Path) -> dict[str, Any]:
    """The raw options of a flat experiment YAML (checked for unknown keys; see
    :func:`experiment_from_dict` to build an :class:`Experiment`)."""
    data = read_mapping(path)
    # a module builder would be imported: a shared file may name one only with --trust-code
    require_trusted_reference(data.get("model"), option="model", source=str(path))
    experiment_from_dict(data, source=str(path))
    return data
