"""Global statistics across processes (``sync="global"``): with 2 gloo processes, every loss that
takes the option gives on each rank the single-process full-batch loss, and each rank's gradient
is ``world_size`` times the full-batch gradient of its own logits (so DDP's averaging gives the
full-batch parameter gradient), float64, within 1e-6; including a rank whose pixels are all
ignored, ranks with different batch sizes, 3-D volumes, an exported searched loss file and the
compiled path.

The loss list is :func:`loss_cases.all_names`: a loss either takes ``sync`` (then it is
tested here) or is listed in :data:`LOCAL` with the reason it needs none.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from loss_cases import IGNORE, all_names, build, inputs, searched_file

from autoloss.errors import InvalidValueError
from autoloss.losses import read_spec
from autoloss.losses.baselines import BASELINES
from autoloss.losses.surrogate import SurrogateLoss

WORLD = 2
SHAPE = (4, 3, 24, 32)
TOL = 1e-6

#: losses without ``sync``, and why they need none
LOCAL = {
    "cross_entropy": "a mean over pixels: DDP's gradient averaging is exact for equal per-rank "
                     "counts of valid pixels",
    "binary_cross_entropy": "a mean over pixels (as cross_entropy)",
    "focal": "a mean over pixels (as cross_entropy)",
    "rmi": "per-image RMI terms and a per-rank BCE mean, not per-class sums",
    "rmi-train": "rmi",
    "jdt-ce": "adds cross_entropy; its jaccard_metric takes sync",
    "paddleseg-lovasz-softmax-ce": "adds cross_entropy; its lovasz_softmax takes sync",
    "paddleseg-lovasz-hinge-bce": "adds binary_cross_entropy; its lovasz_hinge takes sync",
}
#: options that change how the statistics are reduced, tested on top of the defaults
VARIANTS = {
    "dice": [{"per_image": True}, {"reduction": "sum", "per_image": True}],
    "tversky": [{"reduction": "none"}],
    "jaccard_metric": [{"miou_d": 0.5, "miou_i": 0.3, "miou_c": 0.2}],
    "dice_semimetric": [{"miou_d": 0.0, "miou_i": 1.0, "classes": "all"}],
    "lovasz_softmax": [{"per_image": True}, {"classes": "all"}],
    "lovasz_hinge": [{"per_image": False}],
}
#: (rank sizes, whether the last rank's pixels are all ignored)
SPLITS = {"even": ((2, 2), False), "empty rank": ((2, 2), True), "uneven": ((3, 1), False),
          "volumes": ((2, 2), True)}  # 3-D volumes [N,3,4,6,32]
VOLUME_CASES = ["dice", "jaccard_metric", "lovasz_softmax", "soft-bf1", "surrogate"]


def _takes_sync(name: str) -> bool:
    spec = read_spec(name) if name != "surrogate" else {"name": "surrogate"}
    parts = spec.get("combine", [spec])
    def takes(part: dict) -> bool:
        cls = SurrogateLoss if part["name"] == "surrogate" else BASELINES[part["name"]]
        return "sync" in inspect.signature(cls.__init__).parameters
    return all(takes(part) for part in parts)


SYNCED = [name for name in all_names() if _takes_sync(name)]
CASES = [(f"{name} {split}", name, {}, split) for name in SYNCED
         for split in SPLITS if split != "volumes"] + [
    (f"{name} volumes", name, {}, "volumes") for name in VOLUME_CASES] + [
    (f"{name} process group", name, {"sync": "group"}, "empty rank")
    for name in ("dice", "jaccard_metric", "lovasz_softmax", "soft-bf1", "surrogate")] + [
    (f"{name} {opts} {split}", name, opts, split)
    for name, options in VARIANTS.items() for opts in options for split in ("even", "empty rank")]


def test_every_loss_takes_sync_or_says_why_not() -> None:
    names = set(all_names())
    assert set(LOCAL) <= names, sorted(set(LOCAL) - names)
    unclassified = sorted(names - set(SYNCED) - set(LOCAL))
    assert not unclassified, f"losses that neither take sync= nor are listed in LOCAL: {unclassified}"
    assert not set(SYNCED) & set(LOCAL)


def test_sync_option_is_checked(tmp_path) -> None:
    with pytest.raises(InvalidValueError, match="sync must be one of.*sync='globl'.*global"):
        build("dice", tmp_path, sync="globl")


def test_sync_travels_through_a_loss_file(tmp_path) -> None:
    """An exported searched file takes sync at load time, and a spec with it round-trips."""
    from autoloss.losses import load_loss, save_loss

    loss = build("surrogate", tmp_path, sync="global")
    assert loss.sync == "global" and loss.to_dict()["sync"] == "global"
    again = load_loss(save_loss(loss, tmp_path / "again.yaml"))
    assert again.sync == "global" and again.to_dict() == loss.to_dict()
    assert "sync" not in build("surrogate", tmp_path).to_dict()  # default specs are unchanged


def test_single_process_global_is_the_local_loss(tmp_path) -> None:
    """Without an initialised process group, sync='global' is the loss of the (full) batch."""
    logits, labels = inputs("dice", SHAPE, dtype=torch.float64)
    for name in ("dice", "lovasz_softmax", "soft-bf1", "jaccard_metric"):
        torch.testing.assert_close(build(name, tmp_path, sync="global")(logits, labels),
                                   build(name, tmp_path)(logits, labels), rtol=0, atol=0)


def _split_data(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor, list[slice]]:
    sizes, empty_last = SPLITS[split]
    logits, labels = inputs(name, SHAPE, dtype=torch.float64, ignored=0.1, block=4)
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    slices = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    if empty_last:
        labels[slices[-1]] = IGNORE
    if split == "volumes":
        n, c, h, w = logits.shape
        logits, labels = logits.reshape(n, c, 4, h // 4, w), labels.reshape(n, 4, h // 4, w)
    return logits, labels, slices


def _worker(rank: int, init_file: str, folder: str, cases: list, compiled: bool) -> None:
    torch.set_num_threads(1)
    os.environ["AUTOLOSS_COMPILE"] = "1" if compiled else "0"
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    results = {}
    group = dist.new_group(list(range(WORLD)))  # sync=<a process group> (every rank creates it)
    try:
        for label, name, options, split in cases:
            options = dict(options)
            sync = group if options.pop("sync", None) == "group" else "global"
            logits, labels, slices = _split_data(name, split)
            full = logits.clone().requires_grad_(True)
            ref = build(name, Path(folder), **options)(full, labels)
            ref.sum().backward()
            mine = logits[slices[rank]].clone().requires_grad_(True)
            value = build(name, Path(folder), sync=sync, **options)(mine, labels[slices[rank]])
            value.sum().backward()
            ref_grad = full.grad[slices[rank]]
            grad = mine.grad / WORLD
            results[label] = {
                "loss_error": float((value.detach() - ref.detach()).abs().max()),
                "grad_error": float((grad - ref_grad).norm() / ref_grad.norm().clamp_min(1e-300))
                if ref_grad.norm() > 0 else float(grad.norm()),
                "finite": bool(torch.isfinite(mine.grad).all()),
            }
    finally:
        Path(folder, f"rank{rank}.json").write_text(json.dumps(results))
        dist.destroy_process_group()


def _spawn(folder: Path, cases: list, compiled: bool = False) -> dict:
    searched_file(folder)  # written once, before the ranks read it
    mp.spawn(_worker, args=(str(folder / "init"), str(folder), cases, compiled), nprocs=WORLD,
             join=True)
    return {rank: json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(WORLD)}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    return _spawn(tmp_path_factory.mktemp("ddp"), CASES)


def _check(results: dict, label: str) -> None:
    for rank in range(WORLD):
        found = results[rank][label]
        assert found["finite"], (rank, label)
        assert found["loss_error"] <= TOL, (rank, label, found)
        assert found["grad_error"] <= TOL, (rank, label, found)


@pytest.mark.parametrize("label", [case[0] for case in CASES])
def test_two_processes_give_the_full_batch_loss_and_gradient(results, label) -> None:
    _check(results, label)


@pytest.mark.compiled
def test_compiled_surrogate_under_two_processes(tmp_path) -> None:
    cases = [("soft-miou compiled", "soft-miou", {"compile": True}, "empty rank"),
             ("searched compiled", "surrogate", {"compile": True}, "uneven")]
    found = _spawn(tmp_path, cases, compiled=True)
    for label, *_ in cases:
        _check(found, label)
