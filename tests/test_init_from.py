"""``search --init-from LOSS_FILE``: a loss searched elsewhere starts a new search (fake proxy)."""

from __future__ import annotations

import optuna
import pytest
from fake_proxy import fast_tmp_dir

from autoloss.losses import load_loss, read_spec
from autoloss.search.config import SearchConfig
from autoloss.search.plan import plan_search
from autoloss.search.run import run_search
from autoloss.search.storage import make_storage

FACTORY = "fake_proxy:FakeProxy"


@pytest.fixture
def folder():
    yield from fast_tmp_dir()


def search(out, **kw):
    kw = {"trials": 3, "sampler": "random", "plots": False, "proxy_factory": FACTORY,
          "rescore_top": 0, **kw}
    result = run_search(SearchConfig(out=out, **kw), progress=False)
    return result, optuna.load_study(study_name=result.study, storage=make_storage(result.storage))


def test_the_loss_files_curves_are_the_first_trial(folder):
    source, _ = search(folder / "a", trials=4, seed=3)
    _, study = search(folder / "b", init_from=str(source.loss_path))
    first = study.trials[0]
    assert first.user_attrs["reference"] == "init:best_loss.yaml"
    assert [t.user_attrs.get("reference") for t in study.trials[1:3]] == [
        "identity", "paper:asl-voc-miou"]
    file_curves = read_spec(source.loss_path)["curves"]
    trial_curves = first.user_attrs["loss"]["curves"]
    for name, curve in file_curves.items():
        assert trial_curves[name]["points"] == pytest.approx(curve["points"], abs=1e-9)


def test_ppo_policy_is_centred_on_the_loss_file(folder):
    plan = plan_search(SearchConfig(out=folder / "c", sampler="ppo", init_from="asl-voc-miou",
                                    proxy_factory=FACTORY))
    space = plan.space
    sampler = plan.make_sampler()
    assert sampler._initial == pytest.approx(space.params_of_loss(read_spec("asl-voc-miou")))
    assert sampler._initial != pytest.approx(space.initial_params())


def test_a_loss_of_another_metric_is_a_clear_error(folder):
    with pytest.raises(ValueError, match="init_from='asl-voc-bf1'.*no surrogate of metric 'miou'"):
        search(folder / "d", init_from="asl-voc-bf1")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        search(folder / "e", init_from=str(folder / "missing.yaml"))


def test_cross_entropy_weight_of_a_combination_is_taken():
    space = plan_search(SearchConfig(proxy_factory=FACTORY)).space
    spec = {"combine": [{**read_spec("asl-voc-miou"), "weight": 1.0},
                        {"name": "cross_entropy", "weight": 0.3}]}
    import dataclasses

    from autoloss.search.space_types import CeWeight
    from autoloss.search.spaces import load_space

    ce_space = dataclasses.replace(load_space("miou"), ce_weight=CeWeight(fixed=None))
    assert ce_space.params_of_loss(spec)["ce_weight"] == pytest.approx(0.3)
    assert "ce_weight" not in space.params_of_loss(spec)
    assert load_loss(spec)  # the spec itself is valid
