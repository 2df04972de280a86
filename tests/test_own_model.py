"""A user's own network in the proxy, the search, training and comparison (the model hook of
autoloss.train.user_models): spec forms, one-line errors, the trust gate, decoder-resolution
logits, the warm-start cache key, ``init``, provenance, ``compare`` with paired statistics."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from own_models import QuarterNet, full, quarter
from torch import nn

import autoloss.train.proxy as proxy_module
from autoloss.core.metrics import MetricAccumulator
from autoloss.data import load_dataset
from autoloss.errors import (
    InvalidTypeError,
    InvalidValueError,
    MissingFileError,
    UntrustedCodeError,
)
from autoloss.search import SearchConfig, check_proxy, load_experiment, run_search
from autoloss.train.models import logits_at
from autoloss.train.proxy import ProxyConfig, build_proxy
from autoloss.train.trainer import TrainConfig, evaluate, fit
from autoloss.train.user_models import make_model, model_hook
from autoloss.utils.trust import ENV_ALL, ENV_FILES, trust_code

DATA = "shapes?n=16&size=32"  # 16 train / 4 val / 8 test images of 32x32, 6 classes
TINY = {"data": DATA, "steps": 4, "batch_size": 2, "eval_every": 2, "warm_start_steps": 3,
        "metrics": ["miou", "bf1"], "num_threads": 1, "device": "cpu"}
BUILDER = '''
from torch import nn


def build(in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, num_classes, 1))
'''

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def no_trust(monkeypatch):
    monkeypatch.setenv(ENV_FILES, "")
    monkeypatch.delenv(ENV_ALL, raising=False)


@pytest.fixture
def builder_file(tmp_path, no_trust) -> Path:
    path = tmp_path / "my_model.py"
    path.write_text(BUILDER)
    return path


def make(tmp_path: Path, **overrides: object):
    return build_proxy({**TINY, **overrides}, cache_dir=tmp_path / "cache")


# ---- the hook: spec forms and errors ----------------------------------------------------------


def test_a_builder_is_named_by_callable_module_or_file(builder_file):
    for spec in (quarter, QuarterNet, "own_models:quarter"):
        net = make_model(spec, in_channels=3, num_classes=4, seed=0)
        assert isinstance(net, QuarterNet)
    trust_code(builder_file)
    net = make_model(f"{builder_file}:build", in_channels=1, num_classes=2, seed=0)
    assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 2, 8, 8)
    a, b = (make_model(quarter, in_channels=3, num_classes=4, seed=s) for s in (3, 3))
    c = make_model(quarter, in_channels=3, num_classes=4, seed=4)
    assert torch.equal(a.head.weight, b.head.weight)  # seeded: same seed, same weights
    assert not torch.equal(a.head.weight, c.head.weight)


@pytest.mark.parametrize(("spec", "error", "message"), [
    ("no_such_module:build", MissingFileError, "no module named 'no_such_module'.*PYTHONPATH"),
    ("own_models:quartr", InvalidValueError, "defines no 'quartr'; did you mean 'quarter'"),
    ("own_models:not_a_module", InvalidTypeError, "must return a torch.nn.Module, but "
     r"build\(in_channels=3, num_classes=4\) returned dict"),
    ("own_models:no_arguments", InvalidTypeError, r"must take \(in_channels, num_classes\)"),
    ("nowhere.py:build", InvalidValueError, "the file 'nowhere.py' does not exist"),
    ("unte", InvalidValueError, "did you mean 'unet'"),
    (3, InvalidValueError, "model must be one of"),
])
def test_a_bad_builder_is_a_one_line_error(spec, error, message):
    with pytest.raises(error, match=message) as info:
        make_model(spec, in_channels=3, num_classes=4)
    assert "\n" not in str(info.value)


def test_a_builder_file_runs_only_when_trusted(tmp_path, no_trust):
    evil = tmp_path / "evil.py"
    evil.write_text(f"from pathlib import Path\nPath({str(tmp_path / 'RAN')!r}).touch()\n"
                    f"{BUILDER}")
    with pytest.raises(UntrustedCodeError, match="--trust-code"):
        ProxyConfig(**TINY, model=f"{evil}:build")
    with pytest.raises(UntrustedCodeError):
        make_model(f"{evil}:build", in_channels=3, num_classes=2)
    assert not (tmp_path / "RAN").exists()
    trust_code(evil)
    assert isinstance(model_hook(f"{evil}:build").build(3, 2), nn.Module)
    assert (tmp_path / "RAN").exists()


def test_a_model_with_the_wrong_classes_fails_at_its_first_step(tmp_path):
    proxy = make(tmp_path, model="own_models:wrong_channels")
    with pytest.raises(InvalidValueError, match=r"logits \[N, 6, h, w\].*but got \[2, 8, 32, 32\]"):
        proxy.prepare()


# ---- decoder-resolution logits -----------------------------------------------------------------


def test_quarter_resolution_logits_are_upsampled_before_the_loss_and_the_metrics():
    train, val = load_dataset(DATA, "train"), load_dataset(DATA, "val")
    model = make_model(quarter, in_channels=3, num_classes=6, seed=0)
    seen = []

    class Spy(nn.Module):
        def forward(self, logits, labels):
            seen.append((tuple(logits.shape[2:]), tuple(labels.shape[1:])))
            return F.cross_entropy(logits, labels, ignore_index=255)

    fit(model, Spy(), train, config=TrainConfig(steps=2, batch_size=2, eval_every=2,
                                               num_threads=1), progress=False)
    assert seen == [((32, 32), (32, 32))] * 2
    # evaluation: argmax of the bilinearly upsampled logits, against a reference written here
    images, labels = val.arrays()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(val.mean)[:, None, None]) / torch.tensor(val.std)[:, None, None]
    model.eval()
    with torch.no_grad():
        small = model(x)
        assert small.shape[2:] == (8, 8)
        up = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    acc = MetricAccumulator(num_classes=6, ignore_index=255, metrics=["miou"])
    acc.update(up.argmax(1), torch.from_numpy(labels.astype("int64")))
    assert evaluate(model, val, metrics=["miou"])["miou"] == pytest.approx(acc.compute()["miou"])


def test_logits_larger_than_the_input_or_of_other_classes_are_refused():
    with pytest.raises(InvalidValueError, match=r"at most the input's 8x8.*\[1, 3, 16, 16\]"):
        logits_at(torch.zeros(1, 3, 16, 16), (8, 8), num_classes=3)
    with pytest.raises(InvalidValueError, match=r"\[N, 4, h, w\]"):
        logits_at(torch.zeros(1, 3, 8, 8), (8, 8), num_classes=4)
    same = torch.zeros(1, 3, 8, 8)
    assert logits_at(same, (8, 8), num_classes=3) is same


# ---- the proxy on a user's model ---------------------------------------------------------------


def test_the_proxy_runs_a_user_model_unchanged(tmp_path):
    proxy = make(tmp_path, model=quarter)
    report = check_proxy(proxy)  # warm start, seeded fine-tuning, on_eval at 2 and 4, pruning
    assert [step for step, _ in report.evals] == [2, 4]
    assert proxy.trained_warm_start and proxy.warm_start_path.is_file()
    from autoloss.utils.cache import list_cache

    assert [e.model for e in list_cache(tmp_path / "cache")] == ["own_models:quarter"]
    info = json.loads(proxy.warm_start_path.with_suffix(".json").read_text())
    assert info["proxy"]["model"] == "own_models:quarter"
    assert info["model"] == {"builder": "own_models:quarter", "sha256": None}
    again = make(tmp_path, model="own_models:quarter", steps=6)  # same builder, named: same start
    assert again.warm_start_path == proxy.warm_start_path
    again.prepare()
    assert not again.trained_warm_start
    ce = nn.CrossEntropyLoss(ignore_index=255)
    assert proxy.run(ce, seed=1) == proxy.run(ce, seed=1)  # seeded: common random numbers
    assert make(tmp_path, model=full).warm_start_path != proxy.warm_start_path
    unet = make(tmp_path, width=4, depth=2)  # built-ins keep their key (and cached warm starts)
    assert unet._model_key() == dataclasses.asdict(unet.model_config())


def test_the_cache_key_follows_the_builder_file(tmp_path, builder_file, monkeypatch):
    trust_code(builder_file)
    monkeypatch.chdir(tmp_path)
    relative = make(tmp_path, model="my_model.py:build")
    absolute = make(tmp_path, model=f"{builder_file}:build")
    assert relative.key() == absolute.key()
    assert relative.model_record()["model"] == {
        "builder": "my_model.py:build", "sha256": hashlib.sha256(BUILDER.encode()).hexdigest()}
    before = relative.key()
    builder_file.write_text(BUILDER.replace("8", "6"))  # an edited network: another warm start
    assert make(tmp_path, model="my_model.py:build").key() != before


def test_init_replaces_the_cross_entropy_warm_start(tmp_path, monkeypatch):
    start = make_model(quarter, in_channels=3, num_classes=6, seed=7)
    path = tmp_path / "pretrained.pt"
    torch.save(start.state_dict(), path)
    proxy = make(tmp_path, model=quarter, init=str(path))
    assert proxy.warm_start_path is None
    proxy.prepare()
    assert not (tmp_path / "cache").exists()  # no warm start trained
    record = proxy.model_record()
    assert record["init"] == str(path)
    assert record["init_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    seen = []

    def spy(model, loss, train_data, **kw):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        raise RuntimeError("stop here")

    monkeypatch.setattr(proxy_module, "fit", spy)
    for seed in (0, 1):
        with pytest.raises(RuntimeError, match="stop here"):
            proxy.run(nn.CrossEntropyLoss(), seed=seed)
    for state in seen:
        assert all(torch.equal(state[k], v) for k, v in start.state_dict().items())
    with pytest.raises(MissingFileError, match="proxy option init='nowhere.pt': no such file"):
        make(tmp_path, model=quarter, init="nowhere.pt")


# ---- search, provenance and the trust gate of files -------------------------------------------


def test_a_search_on_a_user_model_records_it(tmp_path):
    proxy = {k: v for k, v in TINY.items() if k != "data"}
    result = run_search(SearchConfig(
        data=DATA, trials=3, sampler="random", seed=0, proxy={**proxy, "model": quarter},
        rescore_top=1, rescore_seeds=1, plots=False, out=tmp_path / "run",
        cache=tmp_path / "cache"), progress=False)
    assert result.loss_path is not None and result.counts["complete"] >= 1
    prov = yaml.safe_load(result.loss_path.read_text())["provenance"]
    assert prov["proxy"]["model"] == "own_models:quarter" and prov["proxy_factory"] is None
    assert prov["model"]["model"] == {"builder": "own_models:quarter", "sha256": None}
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["model"]["model"]["builder"] == "own_models:quarter"
    assert info["proxy_factory"] is None


def test_the_search_cli_takes_a_builder_file(tmp_path, builder_file, monkeypatch, capsys):
    from autoloss.cli.app import main

    monkeypatch.chdir(tmp_path)
    assert main(["search", "--data", DATA, "--trials", "2", "--sampler", "random",
                 "--proxy-model", "my_model.py:build", "--proxy-steps", "2",
                 "--proxy-eval-every", "2", "--proxy-batch-size", "2", "--num-threads", "1",
                 "--proxy", "warm_start_steps=2", "--proxy", "metrics=[miou]",
                 "--rescore-top", "0", "--out", "run", "--cache", "cache", "--no-progress",
                 "--no-plots"]) == 0
    prov = yaml.safe_load((tmp_path / "run" / "best_loss.yaml").read_text())["provenance"]
    assert prov["model"]["model"]["sha256"] == hashlib.sha256(BUILDER.encode()).hexdigest()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    assert "--proxy-factory FACTORY" in capsys.readouterr().out


def test_a_shared_file_naming_a_module_builder_needs_trust_code(tmp_path, monkeypatch, no_trust):
    from autoloss.retrain.experiment import read_experiment
    from autoloss.workflow import run_study

    search = tmp_path / "search.yaml"
    search.write_text("metric: miou\nproxy:\n  model: own_models:quarter\n")
    retrain = tmp_path / "retrain.yaml"
    retrain.write_text("losses: [cross_entropy]\nmodel: own_models:quarter\n")
    with pytest.raises(UntrustedCodeError, match="proxy: model='own_models:quarter'"):
        load_experiment(search)
    with pytest.raises(UntrustedCodeError, match="model='own_models:quarter'"):
        read_experiment(retrain)
    study = tmp_path / "study.yaml"
    study.write_text(f"out: {tmp_path / 'st'}\nsearch:\n  metric: miou\nretrain:\n  losses: "
                     "[cross_entropy]\n  model: own_models:quarter\n")
    with pytest.raises(UntrustedCodeError, match="retrain: model='own_models:quarter'"):
        run_study(study, progress=False)
    assert not (tmp_path / "st" / "search").exists()  # refused before the search
    monkeypatch.setenv(ENV_ALL, "1")
    assert load_experiment(search).proxy["model"] == "own_models:quarter"
    assert read_experiment(retrain)["model"] == "own_models:quarter"


# ---- train and compare --------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    from autoloss.cli.train import register

    parser = argparse.ArgumentParser(prog="autoloss")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


RETRAIN = ["--data", DATA, "--steps", "4", "--batch-size", "2", "--eval-every", "2",
           "--num-threads", "1", "--no-progress"]


def test_compare_on_a_user_model_gives_paired_statistics(tmp_path):
    out = tmp_path / "cmp"
    assert _cli("compare", "--model", "own_models:quarter", "--losses",
                "cross_entropy,soft-miou", "--seeds", "2", "--no-plots", "--out", out,
                *RETRAIN) == 0
    record = json.loads((out / "compare.json").read_text())
    assert record["model"] == "own_models:quarter"
    paired = record["paired"]["soft-miou"]["miou"]
    assert paired["n"] == 2 and paired["mean"] is not None
    stored = json.loads((out / "runs" / "soft-miou" / "seed1" / "metrics.json").read_text())
    assert stored["model"] == {"builder": "own_models:quarter", "sha256": None}
    assert "(the user's builder)" in (out / "compare.md").read_text()


def test_train_on_a_builder_file_records_its_sha256(tmp_path, builder_file):
    out = tmp_path / "run"
    assert _cli("train", "--model", f"{builder_file}:build", "--loss", "cross_entropy",
                "--out", out, *RETRAIN) == 0
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["model"]["sha256"] == hashlib.sha256(BUILDER.encode()).hexdigest()
    assert 0 <= stored["test"]["miou"] <= 1
