"""Optuna storages from a URL: what a search, its workers and a run folder open a study with."""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna

from autoloss.errors import InvalidValueError, MissingDependencyError, StorageError, did_you_mean
from autoloss.utils.urls import mask_password, mask_password_in

__all__ = ["make_storage", "open_study", "storage_errors"]

# SQLAlchemy's driver of a URL scheme -> the package that provides it
_DRIVERS = {"postgresql": "psycopg2 (pip install psycopg2-binary)",
            "postgresql+psycopg2": "psycopg2 (pip install psycopg2-binary)",
            "postgresql+psycopg": "psycopg 3 (pip install 'psycopg[binary]')",
            "mysql": "mysqlclient (pip install mysqlclient)",
            "mysql+pymysql": "PyMySQL (pip install pymysql)"}
# what processes creating one new database at once can meet (then opening it again works)
_CREATION_RACES = ("already exists", "UNIQUE constraint failed", "duplicate key value")


def _first_lines(err: BaseException) -> str:
    """The first line of ``err``'s message, and of its cause's when it has one."""
    lines = []
    while err is not None and len(lines) < 2:
        text = str(err).strip()
        lines.append(text.splitlines()[0] if text else repr(err))
        err = err.__cause__
    return " (".join(lines) + ")" * (len(lines) - 1)


def make_storage(url: str, *, heartbeat: int = 30) -> optuna.storages.BaseStorage:
    """An optuna storage: ``journal:PATH`` (file journal) or a SQLAlchemy URL with heartbeats
    (stale trials failed after ``3 * heartbeat`` s and retried once). SQLite waits up to 60 s
    for a lock instead of failing with "database is locked"."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal:"):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    storages = optuna.storages
    retry_cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
    callback_arg = "heartbeat_stale_trial_callback"
    if retry_cls is None:  # optuna < 4.9
        retry_cls, callback_arg = storages.RetryFailedTrialCallback, "failed_trial_callback"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = retry_cls(max_retry=1)
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        for attempt in range(5):
            try:
                return storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                           grace_period=3 * heartbeat, **{callback_arg: retry})
            except ImportError:  # the URL's database driver
                scheme = url.split("://", 1)[0]
                package = _DRIVERS.get(scheme, f"the driver of {scheme!r}")
                raise MissingDependencyError(f"storage {mask_password(url)} needs the database driver "
                                  f"{package}, which is not installed (for PostgreSQL: pip "
                                  "install 'autoloss[postgres]')") from None
            except Exception as err:
                # processes creating one new database together race on its tables and version
                # rows: retry (optuna wraps a failed commit in StorageInternalError, its cause
                # chained; opening a storage commits nothing but those rows)
                if attempt == 4 or not (isinstance(err, optuna.exceptions.StorageInternalError)
                                        or any(text in str(err) for text in _CREATION_RACES)):
                    raise StorageError(f"cannot open the storage {mask_password(url)}: "
                                       f"{mask_password_in(_first_lines(err), url)}") from None
                time.sleep(0.2 + 0.3 * attempt)
    raise AssertionError("unreachable")


def open_study(storage: str, study: str | None = None) -> optuna.Study:
    """Load a study for export or reports; ``study`` may be omitted when the storage holds one."""
    store = make_storage(storage)
    names = optuna.get_all_study_names(storage=store)
    if study is None:
        if len(names) != 1:
            raise InvalidValueError(f"storage {mask_password(storage)} holds studies {names}: name one "
                             f"with --study")
        study = names[0]
    if study not in names:
        raise InvalidValueError(f"storage {mask_password(storage)} has no study {study!r}; it holds "
                         f"{names}"
                         f"{did_you_mean(study, names)}")
    return optuna.load_study(study_name=study, storage=store)


# database messages of rows that contradict each other (two trials with one number, a row
# pointing at a missing study): no write can succeed until the file is restored
_INCONSISTENT_ROWS = ("UNIQUE constraint", "FOREIGN KEY constraint", "NOT NULL constraint",
                      "duplicate key value", "violates foreign key", "IntegrityError")


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """A storage that fails while a command reads or writes it, as one
    :class:`~autoloss.errors.StorageError` naming it (password masked) and the database's own
    reason: a write refused (a full disk, a read-only file: optuna's ``StorageInternalError``),
    garbage in its rows (invalid JSON where optuna keeps attributes), a damaged file (SQLAlchemy's
    errors)."""
    from sqlalchemy.exc import SQLAlchemyError

    where = f"the storage {mask_password(url)}"
    try:
        yield
    except optuna.exceptions.StorageInternalError as err:
        cause = mask_password_in(_root_cause(err), url)
        if any(text in cause for text in _INCONSISTENT_ROWS):  # garbage, not a full disk
            raise StorageError(f"cannot write to {where}: its rows are inconsistent ({cause}); "
                               "restore it from a copy, or start a new search "
                               "(search --overwrite)") from None
        raise StorageError(f"cannot write to {where}: {cause}; make it writable (free disk "
                           "space, file permissions) and run the same command again "
                           "(finished trials are kept)") from None
    except (json.JSONDecodeError, SQLAlchemyError) as err:
        if isinstance(err, json.JSONDecodeError) and not _raised_in_optuna_storage(err):
            raise  # a file of the user's, not the storage
        raise StorageError(f"cannot read {where}: it holds invalid data "
                           f"({mask_password_in(_root_cause(err), url)}); restore it from a "
                           "copy, or start a new search (search --overwrite)") from None


def _root_cause(err: BaseException) -> str:
    """The first line of the innermost exception ``err`` was raised from (the database's own
    message, e.g. ``database or disk is full``)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _raised_in_optuna_storage(err: BaseException) -> bool:
    """Whether ``err`` was raised inside optuna's storage code (reading a study's rows)."""
    tb = err.__traceback__
    while tb is not None:
        if "optuna/storages" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
            return True
        tb = tb.tb_next
    return False
