"""Storage URLs: passwords never reach a file or the terminal; run folders open in any clone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from fake_proxy import fast_tmp_dir

from autoloss.losses import load_loss, read_spec
from autoloss.search import run as search
from autoloss.search import workers
from autoloss.search.config import SearchConfig
from autoloss.search.run_folder import RunFolder
from autoloss.search.run_plots import open_run_study
from autoloss.search.storage import make_storage
from autoloss.utils.urls import is_masked, mask_password, mask_password_in

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


@pytest.mark.parametrize("url, masked", [
    ("postgresql+psycopg2://alice@HOST/db?password=QueryPW",
     "postgresql+psycopg2://alice@HOST/db?password=***"),
    ("postgresql://alice:pw1@HOST/db?sslmode=require&sslpassword=k3y&application_name=a",
     "postgresql://alice:***@HOST/db?sslmode=require&sslpassword=***&application_name=a"),
    ("mysql+mysqldb://bob@host/db?passwd=a&password2=b&PWD=c&charset=utf8",
     "mysql+mysqldb://bob@host/db?passwd=***&password2=***&PWD=***&charset=utf8"),
    ("mysql://bob@host/db?pass%77ord=enc", "mysql://bob@host/db?pass%77ord=***"),  # %77 is 'w'
    ("mssql+pyodbc:///?odbc_connect=DRIVER%3Dx%3BUID%3Du%3BPWD%3Ds3cr",
     "mssql+pyodbc:///?odbc_connect=***"),
    ("postgresql://h/db?access_token=t&api_key=k&client_secret=s",
     "postgresql://h/db?access_token=***&api_key=***&client_secret=***"),
    ("sqlite:////abs/study.db?password=QueryPW", "sqlite:////abs/study.db?password=***"),
    ("sqlite:///study.db?timeout=5", "sqlite:///study.db?timeout=5"),
    ("journal:/abs/x.log?password=QueryPW", "journal:/abs/x.log?password=***"),
    ("journal:redis://:pw@host:6379", "journal:redis://:***@host:6379"),
    ("postgresql://carol@host/db?password=", "postgresql://carol@host/db?password="),  # empty
])
def test_mask_password_masks_every_credential_form(url, masked):
    assert mask_password(url) == masked
    assert is_masked(masked) == (masked != url)
    assert mask_password(masked) == masked


def test_mask_password_in_masks_each_secret_as_written_and_decoded():
    url = "postgresql://alice:p%40ss@h/db?sslpassword=k%3Dy&password=QueryPW"
    text = "FATAL: auth failed for p@ss (p%40ss), key k=y, QueryPW, k%3Dy; db h"
    assert mask_password_in(text, url) == "FATAL: auth failed for *** (***), key ***, ***, ***; db h"
    assert mask_password_in("nothing", "sqlite:///x.db") == "nothing"


@pytest.fixture
def out():
    for path in fast_tmp_dir():
        yield path / "run"


def test_a_search_writes_and_prints_no_password(out, monkeypatch, capsys):
    """A password-bearing URL (served by SQLite here) appears nowhere: not in run.json, the
    study's attributes, the exported loss file's provenance, the summary or stdout."""
    db = out.parent / "real.db"
    url = f"postgresql+psycopg2://alice:{SECRET}@db.invalid:5432/studies"
    real_make_storage = make_storage

    def fake_make_storage(storage, **kw):
        assert storage == url, "the real URL stays in memory for opening the storage"
        return real_make_storage(f"sqlite:///{db}", **kw)

    monkeypatch.setattr(search, "make_storage", fake_make_storage)
    cfg = SearchConfig(out=out, storage=url, trials=4, sampler="random", plots=False,
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
        RunFolder(out).storage()


# every credential form a storage URL or journal path can carry; {db} is a file outside the run
# folder, {out} the run folder; the PostgreSQL forms are served by that SQLite file
SECRET_FORMS = {
    "sqlite-in-folder-password": "sqlite:///{out}/study.db?password={secret}",
    "sqlite-elsewhere-sslpassword": "sqlite:///{db}?mode=rw&sslpassword={secret}",
    "postgres-query-password": "postgresql+psycopg2://alice@db.invalid/studies?password={secret}",
    "postgres-userinfo-and-query": "postgresql://alice:{secret}@db.invalid:5432/studies"
                                   "?sslmode=require&sslpassword={secret}x",
    "journal-query-password": "journal:{db}.log?password={secret}",
}


# pysqlite ignores the dummy query parameters, and SQLAlchemy says so (naming keys, not values)
@pytest.mark.filterwarnings("ignore:Query string argument")
@pytest.mark.parametrize("form", sorted(SECRET_FORMS))
def test_no_credential_form_reaches_a_file_the_terminal_or_the_study(form, out, monkeypatch,
                                                                       capsys):
    """``autoloss search`` with a credential in the storage URL (userinfo, ``password=``,
    ``sslpassword=``; SQLite, PostgreSQL, journal): the secret is in no file of the run folder
    (the study database included), not on stdout/stderr and not in the study's attributes; the
    folder's export then asks for ``--storage`` without printing it either."""
    from autoloss.cli.app import main

    db = out.parent / "elsewhere.db"
    url = SECRET_FORMS[form].format(out=out, db=db, secret=SECRET)
    served = url if url.startswith(("sqlite", "journal")) else f"sqlite:///{db}"
    real_make_storage = make_storage
    for module in (search, workers):  # the modules of the search that open its storage
        monkeypatch.setattr(module, "make_storage",
                            lambda storage, **kw: real_make_storage(served, **kw))
    monkeypatch.setenv("AUTOLOSS_TRUST_CODE", "1")
    argv = ["search", "--trials", "3", "--sampler", "random", "--proxy-factory", FACTORY,
            "--storage", url, "--study", "s", "--out", str(out), "--rescore-top", "1",
            "--rescore-seeds", "1"]
    assert main(argv) == 0
    assert main(["export", str(out), "--to", str(out / "again.yaml")]) == 2
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    assert "password masked; pass --storage URL" in printed.err
    files = [path for path in out.rglob("*") if path.is_file()]
    assert {"run.json", "best_loss.yaml", "summary.md", "plots"} <= {
        path.relative_to(out).parts[0] for path in files}
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    study = optuna.load_study(study_name="s", storage=search.make_storage(url))  # patched
    assert SECRET not in json.dumps(study.user_attrs)
    assert is_masked(study.user_attrs["storage"]) and is_masked(study.user_attrs["config"]["storage"])


def test_a_run_folder_records_no_path_of_the_machine(out):
    """run.json, best_loss.yaml, summary.md and the study's own records name the storage and
    the run folder relative to the folder: nothing in them holds the folder's absolute path."""
    result = search.run_search(SearchConfig(out=out, trials=3, sampler="random",
                                                   plots=False, proxy_factory=FACTORY,
                                                   rescore_top=1, rescore_seeds=1),
                               progress=False)
    info = json.loads((out / "run.json").read_text())
    assert info == {"storage": "sqlite:///study.db", "study": result.study,
                    "relative_to": "run folder", "proxy_factory": FACTORY}
    prov = load_loss(result.loss_path).provenance
    assert prov["storage"] == "sqlite:///study.db"
    assert prov["storage_relative_to"] == "this file's folder"
    assert prov["reward_split"] == "val"
    absolute = str(out.resolve())
    for name in ("run.json", "best_loss.yaml", "summary.md"):
        assert absolute not in (out / name).read_text(), name
    study = optuna.load_study(study_name=result.study, storage=f"sqlite:///{out / 'study.db'}")
    assert absolute not in json.dumps(study.user_attrs)
    assert study.user_attrs["config"]["out"] == "." and study.user_attrs["storage"] == (
        "sqlite:///study.db")


def test_a_run_folder_opens_its_own_study_when_copied(out, tmp_path):
    """A copy of the folder elsewhere (another clone or machine) opens its own study.db, even
    while the original still exists, and exports from it."""
    result = search.run_search(SearchConfig(out=out, trials=3, sampler="random",
                                                   plots=False, proxy_factory=FACTORY,
                                                   rescore_top=0), progress=False)
    moved = tmp_path / "clone" / "run"
    shutil.copytree(out, moved)
    optuna.delete_study(study_name=result.study, storage=f"sqlite:///{out / 'study.db'}")
    assert open_run_study(moved).study_name == result.study  # not the emptied original
    from autoloss.cli.app import main

    assert main(["export", str(moved), "--to", str(tmp_path / "again.yaml")]) == 0
    assert load_loss(tmp_path / "again.yaml").provenance["trial"] == result.best_trial


def test_an_old_run_folder_with_an_absolute_path_opens_in_another_clone(out, tmp_path):
    """run.json of autoloss 0.1 recorded an absolute SQLite path; a copy of the folder elsewhere
    opens its own study.db, and nothing is created at the recorded path."""
    result = search.run_search(SearchConfig(out=out, trials=3, sampler="random",
                                                   plots=False, proxy_factory=FACTORY,
                                                   rescore_top=0), progress=False)
    (out / "run.json").write_text(json.dumps({"storage": f"sqlite:///{out / 'study.db'}",
                                              "study": result.study}))
    moved = tmp_path / "clone" / "run"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    assert open_run_study(moved).study_name == result.study
    from autoloss.cli.app import main

    assert main(["export", str(moved), "--to", str(tmp_path / "again.yaml")]) == 0
    assert load_loss(tmp_path / "again.yaml") is not None
    assert not (out / "study.db").exists(), "no empty database at the recorded path"


def test_make_portable_rewrites_an_old_folder(out, tmp_path, monkeypatch):
    """A folder as autoloss 0.1 left it (absolute paths in run.json, the study's records and the
    loss file's provenance) carries none after ``make_portable``; results are unchanged."""
    result = search.run_search(SearchConfig(out=out, trials=3, sampler="random",
                                                   plots=False, proxy_factory=FACTORY,
                                                   rescore_top=0), progress=False)
    absolute = f"sqlite:///{out.resolve() / 'study.db'}"
    (out / "run.json").write_text(json.dumps({"storage": absolute, "study": result.study}))
    study = optuna.load_study(study_name=result.study, storage=absolute)
    config = {**study.user_attrs["config"], "storage": absolute, "out": str(out.resolve()),
              "cache": str(out.resolve() / "cache")}
    study.set_user_attr("config", config)
    study.set_user_attr("storage", absolute)
    loss_text = (out / "best_loss.yaml").read_text().replace(
        "  storage: sqlite:///study.db\n  storage_relative_to: this file's folder\n",
        f"  storage: {absolute}\n")
    assert absolute in loss_text
    (out / "best_loss.yaml").write_text(loss_text)
    before = [(t.number, t.value, t.params) for t in study.trials]

    moved = tmp_path / "elsewhere" / "run"  # rewritten where it lies now: another clone
    shutil.copytree(out, moved)
    assert RunFolder(moved).make_portable() == ["run.json", "study records", "best_loss.yaml"]
    assert RunFolder(moved).make_portable() == []  # nothing left to do
    for name in ("run.json", "best_loss.yaml", "study.db"):
        assert str(out.resolve()).encode() not in (moved / name).read_bytes(), name
    again = optuna.load_study(study_name=result.study,
                              storage=f"sqlite:///{moved / 'study.db'}")
    assert again.user_attrs["config"]["cache"] == "cache"
    assert [(t.number, t.value, t.params) for t in again.trials] == before
    assert load_loss(moved / "best_loss.yaml").provenance["storage"] == "sqlite:///study.db"


REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p.parent for p in (REPO / "results").rglob("run.json")
                   if (p.parent / "study.db").is_file())


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_a_committed_run_folder_exports_from_another_directory(folder, tmp_path):
    """Each committed search run folder records no path of the machine that made it, and a copy
    in another directory exports its loss again (the same trial, the same curves)."""
    text = (folder / "run.json").read_text()
    assert json.loads(text)["relative_to"] == "run folder", text
    moved = tmp_path / "clone" / folder.name
    shutil.copytree(folder, moved, ignore=shutil.ignore_patterns("plots"))
    from autoloss.cli.app import main

    assert main(["export", str(moved), "--to", str(tmp_path / "again.yaml")]) == 0
    exported, committed = read_spec(tmp_path / "again.yaml"), read_spec(folder / "best_loss.yaml")
    assert exported.pop("provenance")["trial"] == committed.pop("provenance")["trial"]
    assert exported == committed


@pytest.mark.parametrize("recorded", ["sqlite:///../outside.db", "journal:../../journal.log",
                                      "sqlite:///sub/../../outside.db"])
def test_a_relative_storage_record_leading_out_of_the_folder_is_refused(tmp_path, recorded):
    """run.json's relative storage is a file inside the folder; '../' is not followed out of
    it (issue 26, item 13)."""
    folder = tmp_path / "run"
    folder.mkdir()
    (tmp_path / "outside.db").write_bytes(b"")
    (folder / "run.json").write_text(json.dumps({"storage": recorded, "study": "s",
                                                 "relative_to": "run folder"}))
    with pytest.raises(ValueError, match=r"must be a file inside it, but got"):
        RunFolder(folder).storage()
