"""Loss files that travel: an exported loss carries no setting of its search dataset that would
silently change training elsewhere (ignore index), and its boundary tolerance scales with the
image size."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from fake_proxy import fast_tmp_dir

import autoloss
from autoloss.losses import portable_spec
from autoloss.retrain.compare import build_loss
from autoloss.search.config import SearchConfig
from autoloss.search.run import run_search


@pytest.fixture(scope="module")
def exported() -> Path:
    """best_loss.yaml of a 3-trial BF1 search with the fake proxy (3 classes, ignore 255,
    train images 32x48)."""
    for path in fast_tmp_dir():
        result = run_search(SearchConfig(out=path / "run", metric="bf1", trials=3,
                                         sampler="random", plots=False,
                                         proxy_factory="fake_proxy:FakeProxy"), progress=False)
        yield Path(result.loss_path)


def test_export_records_the_dataset_options_in_provenance_only(exported):
    data = yaml.safe_load(exported.read_text())
    assert "ignore_index" not in data
    assert data["tol_at"] == [32, 48] and data["tol"] == 5
    prov = data["provenance"]
    assert prov["dataset_options"] == {"ignore_index": 255}
    assert prov["dataset_classes"] == 3 and prov["train_size"] == [32, 48]


def test_exported_file_on_other_data_does_the_right_thing_or_says_what_to_pass(exported):
    logits = torch.randn(2, 19, 64, 96, requires_grad=True)  # 19 classes, twice the size
    target = torch.randint(0, 19, (2, 64, 96))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: nothing of the search data is applied
        loss = autoloss.load_loss(exported)
        assert loss.ignore_index is None and loss.tol_for(64, 96) == 10
        loss(logits, target).backward()
    assert logits.grad[:, 11].abs().sum() > 0  # class 11 is a class here, not void
    target[:, :4] = 255  # the user's void label, not passed
    with pytest.raises(ValueError, match=r"load_loss\(spec, ignore_index=255\)"):
        loss(logits, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = autoloss.load_loss(exported, ignore_index=255)
        fixed(logits, target)
    assert build_loss(exported, ignore_index=255).ignore_index == 255  # compare passes the data's


def test_old_export_with_the_search_datasets_ignore_index_warns(tmp_path):
    old = {"autoloss_schema": 1, "name": "surrogate", "metric": "miou", "ignore_index": 11,
           "provenance": {"source": "autoloss search", "dataset": "camvid:data/camvid"}}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.warns(UserWarning, match=r"ignore_index=11.*camvid.*load_loss\(path, ignore_index"):
        assert autoloss.load_loss(path).ignore_index == 11
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert autoloss.load_loss(path, ignore_index=255).ignore_index == 255
        autoloss.load_loss("asl-voc-miou")  # a preset is no search export: no warning


def test_ignore_index_that_is_a_class_of_the_logits_warns_once():
    loss = autoloss.load_loss("soft-miou", ignore_index=11)
    logits, target = torch.randn(1, 19, 8, 8), torch.randint(0, 19, (1, 8, 8))
    with pytest.warns(UserWarning, match="ignore_index=11 is one of the C=19 classes"):
        loss(logits, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(logits, target)  # once per loss
        autoloss.load_loss("soft-miou", ignore_index=11)(torch.randn(1, 11, 8, 8),
                                                         torch.randint(0, 12, (1, 8, 8)))


def test_tol_at_scales_with_the_diagonal_and_round_trips():
    scaled = autoloss.load_loss({"name": "surrogate", "metric": "bf1", "tol": 5,
                                 "tol_at": [90, 120]})
    assert [scaled.tol_for(*s) for s in ((90, 120), (180, 240), (45, 60))] == [5, 10, 2]
    logits, target = torch.randn(2, 4, 180, 240), torch.randint(0, 4, (2, 180, 240))
    plain = autoloss.load_loss({"name": "surrogate", "metric": "bf1", "tol": 10})
    assert scaled(logits, target) == plain(logits, target)
    assert autoloss.load_loss(scaled.to_dict()).to_dict() == scaled.to_dict()
    with pytest.raises(ValueError, match="tol_at must be"):
        autoloss.load_loss({"name": "surrogate", "metric": "bf1", "tol_at": [90]})


def test_portable_spec_strips_every_part():
    spec = {"combine": [{"name": "cross_entropy", "ignore_index": 11, "weight": 0.3},
                        {"name": "surrogate", "metric": "miou", "ignore_index": 11}]}
    out, found = portable_spec(spec)
    assert found == {"ignore_index": 11}
    assert all("ignore_index" not in part for part in out["combine"])
    assert spec["combine"][0]["ignore_index"] == 11  # a copy
