"""One root error type for everything that is the user's to fix, one line from the CLI, and a
traceback kept for real bugs (autoloss.errors)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

import autoloss
from autoloss import errors
from autoloss.cli import app as cli
from autoloss.core.programs import load_user_program
from autoloss.data import load_dataset
from autoloss.errors import (
    AutoLossError,
    InvalidValueError,
    StorageError,
    did_you_mean,
)
from autoloss.search.config import SearchConfig
from autoloss.search.run import run_search
from autoloss.train.checkpoint import read_checkpoint

PACKAGE = Path(autoloss.__file__).parent

BUILTIN_OF = {
    "InvalidValueError": ValueError, "InvalidTypeError": TypeError,
    "MissingFileError": FileNotFoundError, "MissingDependencyError": ImportError,
    "StorageError": RuntimeError, "SearchError": RuntimeError,
    "NonFiniteLossError": RuntimeError, "UntrustedCodeError": PermissionError,
}


@pytest.mark.parametrize("name", sorted(BUILTIN_OF))
def test_every_error_is_an_autoloss_error_and_the_builtin_users_catch(name):
    cls = getattr(errors, name)
    assert issubclass(cls, AutoLossError) and issubclass(cls, BUILTIN_OF[name])
    assert getattr(autoloss, name) is cls  # exported from the package root


def test_the_package_raises_no_bare_builtin_for_bad_input():
    """Input errors go through autoloss.errors, so the CLI can tell them from bugs."""
    pattern = re.compile(r"raise (ValueError|TypeError|FileNotFoundError|KeyError)\(")
    found = [f"{path.relative_to(PACKAGE)}:{i}" for path in sorted(PACKAGE.rglob("*.py"))
             for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, f"bare builtin raises (use autoloss.errors): {found}"


def test_did_you_mean():
    assert did_you_mean("miuo", ["miou", "bf1"]) == "; did you mean 'miou'?"
    assert did_you_mean("PRESENT", ["present", "all"]) == "; did you mean 'present'?"
    assert did_you_mean("zzz", ["miou"]) == ""
    assert did_you_mean(3, ["miou"]) == ""
    assert " or " in did_you_mean("tol", ["tol", "tols", "col"])


def test_there_is_one_did_you_mean_helper():
    copies = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
              if "get_close_matches" in path.read_text()]
    assert copies == ["errors.py"]


# ---- the CLI: one line for the user's errors, a traceback for bugs ---------------------------

def _run_cli(monkeypatch, capsys, exc: BaseException) -> tuple[int, str]:
    def command(args):
        raise exc
    monkeypatch.setattr(cli, "_cmd_losses", command)
    code = cli.main(["losses"])
    return code, capsys.readouterr().err


def test_cli_prints_an_autoloss_error_as_one_line(monkeypatch, capsys):
    code, err = _run_cli(monkeypatch, capsys, InvalidValueError("tol must be >= 0, but got -1"))
    assert code == 2
    assert err == "autoloss losses: error: tol must be >= 0, but got -1\n"


def test_cli_prints_a_machine_error_as_one_line_with_its_file(monkeypatch, capsys):
    code, err = _run_cli(monkeypatch, capsys, OSError(30, "Read-only file system", "/x/run"))
    assert code == 2
    assert err == "autoloss losses: error: Read-only file system: /x/run\n"


def test_cli_keeps_the_traceback_of_a_bug(monkeypatch, capsys):
    def command(args):
        return {}["missing"]  # a bug, not the user's input
    monkeypatch.setattr(cli, "_cmd_losses", command)
    with pytest.raises(KeyError):
        cli.main(["losses"])


# ---- files that are not what they claim ---------------------------------------------------

def _npz_bytes(tmp_path: Path) -> bytes:
    np.savez(tmp_path / "good.npz", images=np.zeros((2, 8, 8, 3), np.uint8),
             labels=np.zeros((2, 8, 8), np.uint8))
    return (tmp_path / "good.npz").read_bytes()


@pytest.mark.parametrize("kind,reason", [
    ("empty", "EOFError"), ("truncated", "BadZipFile"), ("bad_crc", "Bad CRC-32"),
    ("random", "neither a zip archive nor an .npy array"),
])
def test_a_broken_npz_is_one_clear_error(tmp_path, capsys, kind, reason):
    good = _npz_bytes(tmp_path)
    data = {"empty": b"", "truncated": good[: len(good) // 2],
            "random": np.random.default_rng(0).bytes(3000)}.get(kind)
    if kind == "bad_crc":
        flipped = bytearray(good)
        flipped[200] ^= 0xFF
        data = bytes(flipped)
    folder = tmp_path / kind
    folder.mkdir()
    for split in ("train", "val"):
        (folder / f"{split}.npz").write_bytes(data)
    with pytest.raises(InvalidValueError, match=f"cannot read .*train.npz: not a valid .npz "
                       f"archive .*{re.escape(reason)}"):
        load_dataset(f"npz:{folder}", "train")
    assert cli.main(["info", f"npz:{folder}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pickle.load" not in err and "allow_pickle" not in err


@pytest.mark.parametrize("content,reason", [
    (b"", "empty or truncated"), (bytes(range(256)) * 4, "weights_only=True"),
])
def test_a_garbage_checkpoint_is_one_clear_error(tmp_path, content, reason):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(InvalidValueError, match=f"cannot read checkpoint .*{reason}") as err:
        read_checkpoint(path)
    assert "will likely succeed" not in str(err.value)  # torch's advice to unpickle: not ours


def test_a_user_metric_with_a_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "my_metrics.py"
    path.write_text("from autoloss.core.programs import MetricProgram\n\ndef tversky(:\n    pass\n")
    autoloss.trust_code(path)
    with pytest.raises(InvalidValueError, match=r"my_metrics.py:3: syntax error"):
        load_user_program(f"{path}:tversky")


def test_a_storage_that_cannot_be_written_is_one_clear_error(tmp_path, monkeypatch):
    """optuna's StorageInternalError (a full disk under SQLite) becomes a StorageError with the
    database's own reason and the advice to resume."""
    import autoloss.search.run as search

    def full_disk(*args, **kwargs):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as err:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the "
                                                         "commit.") from err
    monkeypatch.setattr(search, "setup_study", full_disk)
    cfg = SearchConfig(metric="miou", data="shapes", trials=2, sampler="random", plots=False,
                       rescore_top=0, out=tmp_path / "run", cache=tmp_path / "cache",
                       proxy_factory="fake_proxy:FakeProxy")
    with pytest.raises(StorageError, match=r"cannot write to the storage sqlite:///.*: database "
                       r"or disk is full; .* run the same command again"):
        run_search(cfg, progress=False)


def test_errors_keep_torch_usable():
    """The builtin bases keep the usual idioms: a shape error is still a ValueError."""
    from autoloss.losses import load_loss

    with pytest.raises(ValueError, match="logits"):
        load_loss("asl-voc-miou")(torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 3-trial search (fake proxy), copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("search") / "run"
    run_search(SearchConfig(metric="miou", data="shapes", trials=3, sampler="random",
                            plots=False, rescore_top=0, out=out, cache=out.parent / "cache",
                            proxy_factory="fake_proxy:FakeProxy"), progress=False)
    return out


def _copy(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


def _one_line_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_export_rescoring_a_read_only_study_is_one_line(finished_run, tmp_path, capsys,
                                                        monkeypatch):
    """export --rescore-top on a study that cannot be written (a read-only SQLite file; as
    root, chmod does not stop writes, so the URL opens it read-only) names it (issue 26,
    item 5)."""
    monkeypatch.setenv("AUTOLOSS_TRUST_CODE", "1")
    run = _copy(finished_run, tmp_path / "run")
    url = f"sqlite:///file:{run / 'study.db'}?mode=ro&uri=true"
    err = _one_line_error(capsys, ["export", str(run), "--storage", url, "--rescore-top", "1",
                                   "--rescore-seeds", "1"])
    assert f"cannot write to the storage {url}: attempt to write a readonly database" in err


@pytest.mark.parametrize("command", ["export", "search"])
def test_garbage_inside_study_db_is_one_line_naming_it(finished_run, tmp_path, capsys,
                                                       monkeypatch, command):
    """A study.db whose rows hold garbage (invalid JSON in a trial's attribute): export and
    search say which file holds invalid data, no JSONDecodeError traceback (issue 26,
    item 5)."""
    monkeypatch.setenv("AUTOLOSS_TRUST_CODE", "1")
    run = _copy(finished_run, tmp_path / "run")
    with sqlite3.connect(run / "study.db") as db:
        db.execute("UPDATE trial_user_attributes SET value_json = '{garb' WHERE key = 'loss'")
    argv = ["export", str(run)] if command == "export" else [
        "search", "--out", str(run), "--data", "shapes", "--trials", "4", "--sampler", "random",
        "--rescore-top", "0", "--no-plots", "--no-progress", "--proxy-factory",
        "fake_proxy:FakeProxy", "--cache", str(tmp_path / "cache")]
    err = _one_line_error(capsys, argv)
    assert f"cannot read the storage sqlite:///{run / 'study.db'}: it holds invalid data" in err


@pytest.mark.parametrize("value", ["steps=abc", "model=foo", "nosuch=1", "data=nosuch",
                                   "metrics=[nosuch]", "warm_start=maybe", "size=0"])
def test_a_bad_proxy_value_is_refused_before_the_run_folder_is_written(tmp_path, capsys, value):
    """(issue 26, item 5) a bad --proxy value leaves no run folder behind (was: run.json)."""
    out = tmp_path / "run"
    err = _one_line_error(capsys, ["search", "--out", str(out), "--trials", "2", "--proxy",
                                   value, "--no-progress"])
    assert "proxy" in err or "size" in err
    assert not out.exists()


@pytest.mark.parametrize("cause, advice", [
    ("UNIQUE constraint failed: trial_values.trial_id, trial_values.objective",
     "its rows are inconsistent"),
    ("database or disk is full", "make it writable"),
])
def test_a_failed_storage_write_gives_advice_that_fits_its_cause(cause, advice):
    """Rows that contradict each other (garbage inside study.db) cannot be fixed by the user
    and rerunning fails again: the advice is to restore it or start over, while a full disk
    or a read-only file is the user's to fix (issue 26, item 5)."""
    from autoloss.search.storage import storage_errors

    url = "sqlite:///run/study.db"
    with pytest.raises(StorageError) as info:
        with storage_errors(url):
            try:
                raise sqlite3.IntegrityError(cause) if "UNIQUE" in cause else \
                    sqlite3.OperationalError(cause)
            except sqlite3.Error as err:
                raise optuna.exceptions.StorageInternalError("An exception is raised") from err
    message = str(info.value)
    assert message.startswith(f"cannot write to the storage {url}: ")
    assert cause in message and advice in message
    assert ("--overwrite" in message) == ("UNIQUE" in cause)


@pytest.mark.parametrize("points, where", [("[0.2, 1.5, 0.3, 0.8, 0.3, 0.9]", "points[1]=1.5"),
                                           ("[0.2, 0.5, 0.3, 0.8, 0.3, .nan]", "points[5]=nan")])
@pytest.mark.parametrize("command", ["train", "check"])
def test_a_bad_curve_in_a_loss_file_names_the_file_and_the_curve(tmp_path, capsys, command,
                                                                 points, where):
    """Every command that reads a loss file names it and the curve (issue 26, item 10)."""
    path = tmp_path / "bad.yaml"
    path.write_text("autoloss_schema: 1\nname: surrogate\nmetric: miou\ncurves:\n"
                    f"  union:\n    kind: bezier\n    points: {points}\n")
    argv = [command, "--loss", str(path)] if command == "train" else [command, str(path)]
    if command == "train":
        argv += ["--data", "shapes", "--steps", "1", "--out", str(tmp_path / "run")]
    err = _one_line_error(capsys, argv)
    assert f"{path}: curves.union: points must hold numbers in [0, 1], but got {where}" in err
    assert not (tmp_path / "run").exists()


def test_every_loss_refuses_meta_logits_in_one_clear_error():
    """Logits on the meta device (shapes without values, e.g. a model built under
    ``torch.device('meta')``) get one error saying what to do, from every shipped loss
    (issue 26, item 5); was torch's "unknown device type for autocast"."""
    from autoloss.losses import load_loss
    from autoloss.losses.baselines import BASELINES
    from autoloss.losses.presets import PRESETS

    logits = torch.randn(2, 3, 8, 8, device="meta")
    target = torch.zeros(2, 8, 8, dtype=torch.long, device="meta")
    for name in [*BASELINES, *PRESETS]:
        with pytest.raises(InvalidValueError, match="meta device.*to_empty"):
            load_loss(name)(logits, target)
