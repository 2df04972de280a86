"""Proxy training (autoloss.train.proxy) on tiny shapes configs: cache, evaluation, seeds, errors."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import autoloss.train.proxy as proxy_module
from autoloss.data import load_dataset
from autoloss.train.proxy import NonFiniteLossError, Proxy, ProxyConfig, build_proxy, resolve_data
from autoloss.train.trainer import evaluate

DATA = "shapes?n=24&size=32"  # 24 train / 6 val images of 32x32
TINY = {"data": DATA, "width": 4, "depth": 2, "steps": 4, "batch_size": 2, "eval_every": 2,
        "warm_start_steps": 3, "metrics": ["miou", "bf1"], "num_threads": 1, "device": "cpu"}


def ce() -> nn.Module:
    return nn.CrossEntropyLoss(ignore_index=255)


def make(tmp_path: Path, **overrides: object) -> Proxy:
    return build_proxy({**TINY, **overrides}, cache_dir=tmp_path / "cache")


# ---- warm start cache ------------------------------------------------------------------------


def test_prepare_is_cached_and_idempotent(tmp_path: Path) -> None:
    proxy = make(tmp_path)
    path = proxy.warm_start_path
    assert path is not None and not path.exists()
    proxy.prepare()
    assert proxy.trained_warm_start and path.is_file()
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    proxy.prepare()  # same object: nothing to do
    again = make(tmp_path, steps=6, lr=0.05, eval_every=3)  # trial-only options: same warm start
    assert again.warm_start_path == path
    again.prepare()
    assert not again.trained_warm_start and path.stat().st_mtime_ns == mtime
    assert not list(path.parent.glob("*.partial.pt"))
    other = make(tmp_path, warm_start_steps=4)  # changes the weights: another file
    assert other.warm_start_path != path


def test_warm_start_weights_are_what_run_starts_from(tmp_path: Path, monkeypatch) -> None:
    proxy = make(tmp_path)
    proxy.prepare()
    stored = torch.load(proxy.warm_start_path, weights_only=True)["model"]
    seen = {}

    def spy(model, loss, train_data, **kw):
        seen.update({k: v.clone() for k, v in model.state_dict().items()})
        raise RuntimeError("stop here")

    monkeypatch.setattr(proxy_module, "fit", spy)
    with pytest.raises(RuntimeError, match="stop here"):
        proxy.run(ce(), seed=0)
    assert seen.keys() == stored.keys()
    assert all(torch.equal(seen[k], stored[k]) for k in stored)


def test_warm_start_on_all_ignore_batches_is_finite(tmp_path: Path) -> None:
    """A train split whose batches hold only ignored pixels: the cross-entropy warm start counts
    them as 0, like ``autoloss train`` (torch's mean over no pixel is NaN)."""
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    root.mkdir()
    for split, n in (("train", 4), ("val", 2)):
        labels = rng.integers(0, 3, (n, 16, 16)).astype(np.uint8)
        if split == "train":
            labels[:] = 255  # every batch is ignored entirely (here: the whole split)
        np.savez(root / f"{split}.npz", images=rng.integers(0, 256, (n, 16, 16, 3), np.uint8),
                 labels=labels, num_classes=np.array(3), ignore_index=np.array(255))
    proxy = make(tmp_path, data=f"npz:{root}", warm_start_steps=4)
    proxy.prepare()
    assert proxy.trained_warm_start and proxy.warm_start_path.is_file()
    state = torch.load(proxy.warm_start_path, weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def _prepare_in_child(config: dict, cache_dir: str, queue: multiprocessing.Queue) -> None:
    p = build_proxy(config, cache_dir=Path(cache_dir))
    p.prepare()
    queue.put(p.trained_warm_start)


@pytest.mark.slow
def test_prepare_concurrent_processes_train_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    config = {**TINY, "warm_start_steps": 30}
    procs = [ctx.Process(target=_prepare_in_child, args=(config, str(tmp_path), queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(queue.get() for _ in procs) == [False, True]
    assert len(list(tmp_path.glob("warmstart-*.pt"))) == 1


# ---- one trial -------------------------------------------------------------------------------


def test_run_reports_exact_metrics_on_val_at_eval_steps(tmp_path: Path, monkeypatch) -> None:
    proxy = make(tmp_path, steps=5, eval_every=2)
    assert proxy.eval_steps == [2, 4, 5]
    proxy.prepare()
    captured = {}
    real_fit = proxy_module.fit

    def spy(model, loss, train_data, **kw):
        captured.update(model=model, eval_data=kw["eval_data"], train=train_data)
        return real_fit(model, loss, train_data, **kw)

    monkeypatch.setattr(proxy_module, "fit", spy)
    calls = []
    final = proxy.run(ce(), seed=0, on_eval=lambda step, m: calls.append((step, m)))
    assert [s for s, _ in calls] == [2, 4, 5]
    assert all(set(m) == {"miou", "bf1"} and all(0 <= v <= 1 for v in m.values())
               for _, m in calls)
    assert final == calls[-1][1]
    val = captured["eval_data"]
    assert val.split == "val" and captured["train"].split == "train"
    ref_images, ref_labels = load_dataset(DATA, "val").arrays()
    images, labels = val.arrays()
    assert (images == ref_images).all() and (labels == ref_labels).all()
    # an independent evaluation of the fine-tuned model on the val split gives the same numbers
    again = evaluate(captured["model"], load_dataset(DATA, "val"), metrics=["miou", "bf1"])
    assert again == pytest.approx(final, abs=1e-12)


def test_run_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    proxy = make(tmp_path)
    first = proxy.run(ce(), seed=3)
    assert proxy.run(ce(), seed=3) == first
    assert make(tmp_path).run(ce(), seed=3) == first  # a new Proxy on the same cache


def test_run_without_warm_start_trains_from_a_seeded_init(tmp_path: Path) -> None:
    proxy = make(tmp_path, warm_start=False)
    assert proxy.warm_start_path is None
    proxy.prepare()  # nothing to do
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    assert proxy.run(ce(), seed=1) == proxy.run(ce(), seed=1)


class NaNLoss(nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logits.sum() * float("nan")


def test_nonfinite_loss_propagates(tmp_path: Path) -> None:
    proxy = make(tmp_path)
    seen = []
    with pytest.raises(NonFiniteLossError) as info:
        proxy.run(NaNLoss(), seed=0, on_eval=lambda s, m: seen.append(s))
    assert info.value.step == 1 and seen == []


def test_pruning_exception_from_on_eval_propagates(tmp_path: Path) -> None:
    class Pruned(Exception):
        pass

    def prune(step: int, metrics: dict) -> None:
        raise Pruned(step)

    with pytest.raises(Pruned):
        make(tmp_path).run(ce(), seed=0, on_eval=prune)


# ---- frozen trunk, cached features ------------------------------------------------------------


def test_trunk_then_tail_equals_the_unet() -> None:
    from autoloss.train.models import UNetConfig, build_model
    from autoloss.train.proxy_features import UNetTail, unet_trunk

    for depth in (1, 3):
        unet = build_model(UNetConfig(num_classes=5, width=4, depth=depth), seed=0).eval()
        x = torch.randn(2, 3, 27, 38)
        with torch.no_grad():
            assert torch.allclose(UNetTail(unet)(unet_trunk(unet, x)), unet(x), atol=1e-6)


def test_finetune_last_trains_only_the_tail_on_cached_features(tmp_path: Path,
                                                                monkeypatch) -> None:
    proxy = make(tmp_path, finetune="last", steps=3, eval_every=3)
    proxy.prepare()
    train, val = proxy._features()
    assert train.features.shape == (24, 32, 32, 8) and val.features.shape == (6, 32, 32, 8)
    assert train.split == "train" and val.split == "val"
    captured = {}
    real_fit = proxy_module.fit

    def spy(model, loss, train_data, **kw):
        captured.update(model=model, config=kw["config"])
        return real_fit(model, loss, train_data, **kw)

    monkeypatch.setattr(proxy_module, "fit", spy)
    calls = []
    final = proxy.run(ce(), seed=0, on_eval=lambda s, m: calls.append(s))
    assert calls == [3] and set(final) == {"miou", "bf1"}
    assert not captured["config"].augment
    tail = captured["model"]
    assert sum(p.numel() for p in tail.parameters()) == 8 * 4 * 9 + 4 + 4 + 4 * 4 * 9 + 4 + 4 + \
        4 * 6 + 6  # conv (no bias) + BN, twice, then the 1x1 classifier
    assert proxy.run(ce(), seed=0) == final


# ---- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "field"), [
    ({"steps": 0}, "steps"), ({"batch_size": 1.5}, "batch_size"), ({"lr": -1.0}, "lr"),
    ({"crop": (0, 8)}, "crop"), ({"crop": "big"}, "crop"), ({"eval_every": True}, "eval_every"),
    ({"subset": 0}, "subset"), ({"warm_start": "yes"}, "warm_start"),
    ({"eval_split": "test"}, "eval_split"), ({"metrics": ["mIoU"]}, "metrics"),
    ({"metrics": 0}, "metrics"), ({"metrics": {"miou": 1}}, "metrics"),
    ({"model": "unte"}, "did you mean 'unet'"), ({"optimizer": "adam"}, "optimizer"),
    ({"data": "shape"}, "did you mean 'shapes'"), ({"grad_clip": 0}, "grad_clip"),
    ({"size": (32,)}, "size"), ({"max_side": -2}, "max_side"),
    ({"finetune": "head"}, "finetune"), ({"finetune": "last", "model": "deeplab"}, "finetune"),
    ({"finetune": "last", "warm_start": False}, "finetune"),
    ({"finetune": "last", "crop": 16}, "crop"),
])
def test_config_validation_names_the_field(options: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ProxyConfig(**options)


def test_build_proxy_rejects_unknown_keys_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown proxy option 'step'.*did you mean 'steps'"):
        build_proxy({"data": "shapes", "step": 10}, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="ProxyConfig"):
        build_proxy(["steps", 10], cache_dir=tmp_path)  # type: ignore[arg-type]


def test_config_accepts_yaml_style_values() -> None:
    config = ProxyConfig.from_dict({"crop": [24, 32], "size": 48, "metrics": "miou"})
    assert (config.crop, config.size, config.metrics) == ((24, 32), (48, 48), ("miou",))
    assert ProxyConfig(crop=16).crop == (16, 16)  # the CLI's --proxy-crop is one int


def test_resolution_rule() -> None:
    # larger side above max_side: divide by the smallest integer bringing it under
    assert resolve_data(ProxyConfig(data="shapes?n=8&size=60x90", max_side=40)) == \
        "shapes?n=8&size=60x90"  # an explicit size in the spec wins
    assert resolve_data(ProxyConfig(data="shapes?n=8", max_side=30)) == "shapes?n=8&size=21x21"
    assert resolve_data(ProxyConfig(data="shapes?n=8", max_side=64)) == "shapes?n=8"
    assert resolve_data(ProxyConfig(data="shapes?n=8", max_side=None)) == "shapes?n=8"
    assert resolve_data(ProxyConfig(data="shapes", size=(16, 24))) == "shapes?size=16x24"
    with pytest.raises(ValueError, match="size"):
        resolve_data(ProxyConfig(data="shapes?size=32", size=(16, 16)))


def test_proxy_exposes_dataset_facts(tmp_path: Path) -> None:
    proxy = make(tmp_path, steps=7, eval_every=3)
    assert (proxy.num_classes, proxy.ignore_index, proxy.eval_steps) == (6, 255, [3, 6, 7])
    assert make(tmp_path, data="shapes?n=24&size=32&ignore_index=none").ignore_index is None


# ---- with the search -------------------------------------------------------------------------


def test_two_searches_share_one_warm_start(tmp_path: Path, monkeypatch) -> None:
    """End to end with the real proxy: a second search on the same data and model, in another
    output folder and for another metric, reuses the first one's warm start from the shared
    cache (autoloss.utils.cache) instead of training it again."""
    from autoloss.search.config import SearchConfig
    from autoloss.search.run import run_search
    from autoloss.utils.cache import list_cache

    monkeypatch.setenv("AUTOLOSS_CACHE", str(tmp_path / "shared"))
    trained = []
    real_prepare = proxy_module.Proxy._prepare_warm_start

    def spy(self, **kw):
        trained.append(not self.warm_start_path.exists())  # this call has to train it
        real_prepare(self, **kw)

    monkeypatch.setattr(proxy_module.Proxy, "_prepare_warm_start", spy)
    proxy = {k: v for k, v in TINY.items() if k != "data"}
    for metric in ("miou", "bf1"):
        config = SearchConfig(metric=metric, data=DATA, trials=2, out=tmp_path / metric,
                              proxy=proxy, rescore_top=0, plots=False)
        result = run_search(config, progress=False)
        assert result.counts["complete"] + result.counts["pruned"] == 2
        assert isinstance(result.baseline_ce, float) and 0 <= result.baseline_ce <= 1
        assert result.loss_path is not None and result.loss_path.is_file()
        assert not (tmp_path / metric / "cache").exists()
    assert sum(trained) == 1 and trained[0]  # trained once, by the first search, then reused
    (entry,) = list_cache(tmp_path / "shared")
    assert entry.data.startswith("shapes") and entry.steps == TINY["warm_start_steps"]


def test_cache_key_ignores_how_the_data_path_is_written(tmp_path: Path, monkeypatch) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    folder.mkdir()
    for split in ("train", "val"):
        np.savez(folder / f"{split}.npz", images=rng.integers(0, 255, (4, 16, 16, 3), np.uint8),
                 labels=rng.integers(0, 3, (4, 16, 16), np.uint8))
    monkeypatch.chdir(tmp_path)
    options = {**TINY, "metrics": ["miou"]}
    relative = build_proxy({**options, "data": "npz:data"}, cache_dir=tmp_path / "c")
    absolute = build_proxy({**options, "data": f"npz:{folder}"}, cache_dir=tmp_path / "c")
    assert relative.warm_start_path == absolute.warm_start_path
    assert relative.num_classes == 3 and relative.ignore_index is None
    relative.prepare()
    absolute.prepare()
    assert relative.trained_warm_start and not absolute.trained_warm_start


def test_cache_location_and_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    from autoloss.cli.app import main
    from autoloss.utils.cache import clear_cache, default_cache_dir, list_cache

    monkeypatch.delenv("AUTOLOSS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "autoloss"
    monkeypatch.setenv("AUTOLOSS_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    proxy = build_proxy(TINY, cache_dir=default_cache_dir())
    proxy.prepare()
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "1 warm start(s)" in out and proxy.warm_start_path.name in out and "unet w4 d2" in out
    assert main(["cache", "clear"]) == 0 and "deleted 1 warm start(s)" in capsys.readouterr().out
    assert list_cache() == [] and not list((tmp_path / "mine").iterdir())
    assert clear_cache(tmp_path / "nowhere") == 0


def test_replaced_data_gets_another_warm_start(tmp_path: Path) -> None:
    import numpy as np

    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        np.savez(folder / f"{split}.npz", images=rng.integers(0, 255, (n, 16, 16), np.uint8),
                 labels=rng.integers(0, 2, (n, 16, 16), np.uint8))
    config = {**TINY, "data": f"npz:{folder}?num_classes=2"}
    key = build_proxy(config, cache_dir=tmp_path).key()
    np.savez(folder / "train.npz", images=rng.integers(0, 255, (8, 16, 16), np.uint8),
             labels=rng.integers(0, 2, (8, 16, 16), np.uint8))
    assert build_proxy(config, cache_dir=tmp_path).key() != key


def test_search_says_what_it_does_before_the_first_trial(tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    """Progress is visible from the first second: the warm start and the baseline announce
    themselves (a newcomer's first search would otherwise sit silent for minutes)."""
    from autoloss.search.config import SearchConfig
    from autoloss.search.run import run_search

    monkeypatch.setenv("AUTOLOSS_CACHE", str(tmp_path / "shared"))
    proxy = {k: v for k, v in TINY.items() if k != "data"}
    config = SearchConfig(metric="miou", data=DATA, trials=1, out=tmp_path / "run", proxy=proxy,
                          rescore_top=0, plots=False)
    run_search(config, progress=True)
    captured = capsys.readouterr()
    out = captured.out
    assert "training the cross-entropy warm start (3 steps" in out
    assert out.index("warm start") < out.index("scoring the cross-entropy baseline")
    assert "warm start" in captured.err  # its progress bar (tqdm writes to stderr)
    run_search(SearchConfig(**{**config.__dict__, "trials": 2}), progress=True)
    assert "training the cross-entropy warm start" not in capsys.readouterr().out  # cached
