"""Storage URLs: passwords never reach a file or the terminal; run folders open in any clone."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest
from fake_proxy import fast_tmp_dir

from autoloss import search
from autoloss.losses import load_loss
from autoloss.plot_cli import open_run_study, run_storage
from autoloss.urls import is_masked, mask_password

FACTORY = "fake_proxy:FakeProxy"
SECRET = "Hunter2-pw"


@pytest.mark.parametrize("url, masked", [
    ("postgresql+psycopg2://alice:Hunter2-pw@db.example:5432/studies",
     "postgresql+psycopg2://alice:***@db.example:5432/studies"),
    ("mysql://bob:p@ss:w@rd@host/db", "mysql://bob:***@host/db"),   # '@' and ':' in a password
    ("postgresql://carol@host/db", "postgresql://carol@host/db"),   # no password
    ("postgresql://dave:@host/db", "postgresql://dave:@host/db"),   # empty password
    ("sqlite:////abs/path/study.db", "sqlite:////abs/path/study.db"),
    ("journal:results/x.log", "journal:results/x.log"),
])
def test_mask_password(url, masked):
    assert mask_password(url) == masked
    assert is_masked(masked) == (masked != url)
    assert mask_password(None) is None


@pytest.fixture
def out():
    for path in fast_tmp_dir():
        yield path / "run"


def test_a_search_writes_and_prints_no_password(out, monkeypatch, capsys):
    """A password-bearing URL (served by SQLite here) appears nowhere: not in run.json, the
    study's attributes, the exported loss file's provenance, the summary or stdout."""
    db = out.parent / "real.db"
    url = f"postgresql+psycopg2://alice:{SECRET}@db.invalid:5432/studies"
    real_make_storage = search.make_storage

    def fake_make_storage(storage, **kw):
        assert storage == url, "the real URL stays in memory for opening the storage"
        return real_make_storage(f"sqlite:///{db}", **kw)

    monkeypatch.setattr(search, "make_storage", fake_make_storage)
    cfg = search.SearchConfig(out=out, storage=url, trials=4, sampler="random", plots=False,
                              proxy_factory=FACTORY, rescore_top=2, rescore_seeds=1)
    result = search.run_search(cfg, progress=False)
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".db":
            assert SECRET not in path.read_text(errors="replace"), path
    study = optuna.load_study(study_name=result.study, storage=f"sqlite:///{db}")
    assert SECRET not in json.dumps(study.user_attrs)
    assert study.user_attrs["storage"] == mask_password(url)
    assert load_loss(result.loss_path).provenance["storage"] == mask_password(url)
    # the masked URL cannot be opened; the error says what to pass
    with pytest.raises(ValueError, match=r"password masked; pass --storage URL"):
        run_storage(out)


def test_a_run_folder_opens_in_another_clone(out, tmp_path):
    """run.json records an absolute SQLite path; a copy of the folder elsewhere (a clone on
    another machine) opens its own study.db, and nothing is created at the recorded path."""
    result = search.run_search(search.SearchConfig(out=out, trials=3, sampler="random",
                                                   plots=False, proxy_factory=FACTORY,
                                                   rescore_top=0), progress=False)
    moved = tmp_path / "clone" / "run"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    assert open_run_study(moved).study_name == result.study
    from autoloss.cli import main

    assert main(["export", str(moved), "--to", str(tmp_path / "again.yaml")]) == 0
    assert load_loss(tmp_path / "again.yaml") is not None
    assert not (out / "study.db").exists(), "no empty database at the recorded path"
