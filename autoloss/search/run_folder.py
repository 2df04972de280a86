"""A search's run folder, and the one class that reads and writes its record.

What ``autoloss search --out DIR`` leaves there::

    DIR/run.json         where the study is: {"storage": URL, "study": NAME, "relative_to": ...}
    DIR/study.db         the optuna study (the default SQLite storage)
    DIR/best_loss.yaml   the exported loss (provenance included)
    DIR/identity_loss.yaml  the search's control: its plain soft metric (identity curves), as
                         re-scored next to the export; retrain it beside best_loss.yaml
    DIR/summary.md       the search summary
    DIR/plots/           the figures (``autoloss plot DIR`` redraws them)

A storage file inside the folder (SQLite ``sqlite:///...`` or ``journal:...``) is recorded
*relative to the folder* (``"storage": "sqlite:///study.db", "relative_to": "run folder"``), and
so are the paths the study records of itself, so a folder copied to another clone, directory or
machine opens its own study, never one at the path where it was made. A server URL (PostgreSQL,
MySQL) is recorded as given, its password masked. Folders written by autoloss 0.1 recorded
absolute paths; reading them falls back to the folder's own ``study.db`` when the recorded path
is not there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autoloss.errors import InvalidValueError

__all__ = ["RUN_INFO", "RunFolder", "portable_cache", "portable_path", "portable_storage",
           "resolve_storage"]

RUN_INFO = "run.json"
_RELATIVE = "run folder"
_FILE_SCHEMES = ("sqlite:///", "journal:")


def _inside(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` (POSIX), or None when it lies elsewhere."""
    try:
        return path.expanduser().resolve().relative_to(folder.expanduser().resolve()).as_posix()
    except ValueError:
        return None


def portable_path(path: str | Path, folder: str | Path) -> str:
    """How a run folder records a path: relative to ``folder`` when inside it, ``~/...`` when in
    the home folder, else as it is (a place the user chose)."""
    relative = _inside(Path(path), Path(folder))
    if relative is not None:
        return relative
    home = _inside(Path(path), Path.home())
    return f"~/{home}" if home not in (None, ".") else str(path)


def portable_cache(path: str | Path | None, folder: str | Path) -> str | None:
    """How a run folder records its proxy cache: as :func:`portable_path` when inside the folder
    or the home folder, else not at all (None: a cache never changes a result, and reusing a
    study takes the cache of the machine it runs on)."""
    if path is None:
        return None
    recorded = portable_path(path, folder)
    return None if Path(recorded).is_absolute() else recorded


def portable_storage(url: str, folder: str | Path) -> tuple[str, bool]:
    """``(recorded URL, relative)``: a storage file inside ``folder`` as a URL relative to it
    (``relative`` True); any other URL as given; both with every credential masked
    (:func:`autoloss.utils.urls.mask_password`, a SQLite URL's ``?password=`` too)."""
    from autoloss.utils.urls import mask_password

    for scheme in _FILE_SCHEMES:
        if url.startswith(scheme):
            relative = _inside(Path(url[len(scheme):]), Path(folder))
            if relative is not None:
                return mask_password(f"{scheme}{relative}"), True
    return mask_password(url), False


def resolve_storage(url: str, folder: str | Path) -> str:
    """The inverse of :func:`portable_storage` for a relative record: the URL of the file in
    ``folder`` as it is now (absolute)."""
    for scheme in _FILE_SCHEMES:
        if url.startswith(scheme):
            path = (Path(folder) / url[len(scheme):]).resolve()
            if _inside(path, Path(folder)) is None:  # "../", an absolute path, a symlink out
                raise InvalidValueError(f"a storage recorded relative to its run folder "
                                        f"{str(folder)!r} must be a file inside it, but got "
                                        f"{url!r}; fix run.json or pass --storage URL")
            return f"{scheme}{path}"
    raise InvalidValueError(f"a storage recorded relative to its run folder must start with one "
                            f"of {list(_FILE_SCHEMES)}, but got {url!r}")


class RunFolder:
    """A search's run folder ``path`` (see the module docstring for what it holds)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def info_path(self) -> Path:
        return self.path / RUN_INFO

    @property
    def loss_path(self) -> Path:
        return self.path / "best_loss.yaml"

    @property
    def identity_loss_path(self) -> Path:
        return self.path / "identity_loss.yaml"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.md"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    def check_search(self, storage: str, study: str) -> None:
        """Refuse to run the search of ``study`` in ``storage`` here if the folder holds
        another one: ``run.json`` names another study or storage, or the storage file it records
        inside the folder is missing, empty or not a database (a new search would silently
        replace the old one's outputs). ``overwrite`` in :func:`autoloss.search.run.search_study`
        clears the folder first (:meth:`clear`)."""
        if not self.info_path.is_file():
            return
        from autoloss.utils.json_files import read_json

        info = read_json(self.info_path, fix="delete the run folder's files or pass --overwrite")
        if not isinstance(info, dict):
            info = {}
        recorded_storage, recorded_study = info.get("storage"), info.get("study")
        differs = []
        if recorded_study != study:
            differs.append(f"study {recorded_study!r} (this search: {study!r})")
        if not self._same_storage(recorded_storage, info.get("relative_to"), storage):
            differs.append(f"storage {recorded_storage!r} (this search: "
                           f"{portable_storage(storage, self.path)[0]!r})")
        fix = "pass another --out, or --overwrite to delete its search and start a new one"
        if differs:
            raise InvalidValueError(f"run folder {str(self.path)!r} holds another search: "
                                    f"{'; '.join(differs)}; {fix}")
        for scheme in _FILE_SCHEMES:
            if not storage.startswith(scheme):
                continue
            path = Path(storage[len(scheme):]).expanduser()
            problem = None
            if not path.is_file():
                problem = "is missing"
            elif path.stat().st_size == 0:
                problem = "is empty (0 bytes)"
            elif scheme == "sqlite:///":
                with path.open("rb") as f:
                    if f.read(16) != b"SQLite format 3\x00":
                        problem = "is not an SQLite database"
            if problem is not None:
                raise InvalidValueError(f"run folder {str(self.path)!r} records its study "
                                        f"{recorded_study!r} in {str(path)!r}, which {problem}; "
                                        f"restore the file, or {fix}")

    def _same_storage(self, recorded: object, relative_to: object, storage: str) -> bool:
        """Whether ``run.json``'s ``recorded`` storage is ``storage``: the same file (a relative
        record resolved here; an old absolute SQLite path that is not there, this folder's
        ``study.db``, as :meth:`storage` reads it) or the same URL with its password masked."""
        from autoloss.utils.urls import mask_password

        if not isinstance(recorded, str):
            return False
        if relative_to == _RELATIVE:
            recorded = resolve_storage(recorded, self.path)
        for scheme in _FILE_SCHEMES:
            if recorded.startswith(scheme) and storage.startswith(scheme):
                old, new = (Path(u[len(scheme):]).expanduser().resolve()
                            for u in (recorded, storage))
                if scheme == "sqlite:///" and not old.is_file():
                    old = (self.path / "study.db").resolve()
                return old == new
        return recorded == mask_password(storage)

    def clear(self, storage: str) -> list[str]:
        """Delete what a search wrote here (``run.json``, the storage file ``storage`` when it is
        inside the folder, the exported losses, the summary and the plots), nothing else; a
        study on a database server is not touched. Returns the names deleted."""
        import shutil

        names = [RUN_INFO, self.loss_path.name, self.identity_loss_path.name,
                 self.summary_path.name]
        for scheme in _FILE_SCHEMES:
            if storage.startswith(scheme):
                inside = _inside(Path(storage[len(scheme):]), self.path)
                if inside is not None:
                    names += [inside, *(inside + end for end in ("-journal", "-wal", "-shm"))]
        deleted = []
        for name in names:
            path = self.path / name
            if path.is_file():
                path.unlink()
                deleted.append(name)
        if self.plots_dir.is_dir():
            shutil.rmtree(self.plots_dir)
            deleted.append(self.plots_dir.name)
        return deleted

    def write_info(self, storage: str, study: str, *, proxy_factory: str | None = None,
                   model: dict[str, Any] | None = None) -> None:
        """Record where the study is (``run.json``), relative to the folder where it can be,
        and what scored its trials: the ``proxy_factory`` (None: autoloss's proxy) and the
        proxy's ``model`` record (:meth:`autoloss.train.proxy.Proxy.model_record`)."""
        from autoloss.utils.atomic import write_text_atomic

        url, relative = portable_storage(storage, self.path)
        info = {"storage": url, "study": study, **({"relative_to": _RELATIVE} if relative else {}),
                "proxy_factory": proxy_factory, **({"model": model} if model is not None else {})}
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.info_path, json.dumps(info))

    def storage(self) -> tuple[str, str | None] | None:
        """``(storage URL, study name or None)``, or None if the folder holds no study.

        Reads ``run.json``; a relative record resolves against this folder. An old absolute
        SQLite path that does not resolve here (another clone or machine) falls back to the
        folder's ``study.db``. Without ``run.json``, the single ``*.db`` file of the folder is
        used. A recorded URL whose password was masked cannot be opened: the error says to pass
        ``--storage``."""
        from autoloss.utils.json_files import read_json
        from autoloss.utils.urls import is_masked

        info = read_json(self.info_path, fix="rewrite it as {\"storage\": URL, \"study\": NAME} "
                         "or pass --storage URL") if self.info_path.is_file() else {}
        if not isinstance(info, dict):
            raise InvalidValueError(f"{self.info_path} must hold a JSON object with 'storage' and "
                                    f"'study', but got {type(info).__name__}")
        storage, name = info.get("storage"), info.get("study")
        if isinstance(storage, str) and info.get("relative_to") == _RELATIVE:
            storage = resolve_storage(storage, self.path)
        if isinstance(storage, str) and is_masked(storage):
            raise InvalidValueError(f"{self.info_path} records the storage {storage} with its "
                                    f"password masked; pass --storage URL (with the password) "
                                    f"to open it")
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            if not Path(storage[len("sqlite:///"):]).is_file():
                local = self.path / "study.db"
                storage = f"sqlite:///{local.resolve()}" if local.is_file() else None
        if not storage:
            dbs = sorted(self.path.glob("*.db"))
            if not dbs:
                return None
            if len(dbs) > 1:
                raise InvalidValueError(f"run folder {str(self.path)!r} holds several databases "
                                        f"{[p.name for p in dbs]}; expected one (or a run.json "
                                        f"naming it)")
            storage = f"sqlite:///{dbs[0].resolve()}"
        return storage, name if isinstance(name, str) else None

    def make_portable(self) -> list[str]:
        """Rewrite a folder made by autoloss 0.1 (absolute or working-directory-relative paths)
        so it records its storage and paths relative to itself: ``run.json``, the study's own
        records (user attributes ``config`` and ``storage``) and the ``storage`` of
        ``best_loss.yaml``'s provenance. Run it where the folder's recorded paths resolve (the
        working directory it was made from, or anywhere for absolute paths). Nothing else
        changes. Returns what was rewritten."""
        import re

        found = self.storage()
        if found is None:
            raise InvalidValueError(f"run folder {str(self.path)!r} holds no study to rewrite")
        storage, name = found
        for scheme in _FILE_SCHEMES:  # an old absolute path names the folder it was made in:
            if storage.startswith(scheme):  # this folder's copy of that file is its own
                own = self.path / Path(storage[len(scheme):]).name
                if own.is_file():
                    storage = f"{scheme}{own.resolve()}"
        url, relative = portable_storage(storage, self.path)
        if not relative:
            return []
        changed = []
        old_info = self.info_path.read_text() if self.info_path.is_file() else None
        self.write_info(storage, name or "")
        if self.info_path.read_text() != old_info:
            changed.append(RUN_INFO)
        import optuna

        from autoloss.search.storage import make_storage

        study = optuna.load_study(study_name=name, storage=make_storage(storage))
        config = dict(study.user_attrs.get("config") or {})
        new_config = {**config, "storage": url, "out": "."}
        cache, old_out = config.get("cache"), config.get("out")
        if isinstance(cache, str):  # a cache inside the folder where it was made: relative
            inside = _inside(Path(cache), Path(old_out)) if isinstance(old_out, str) else None
            new_config["cache"] = inside or portable_cache(cache, self.path)
        if new_config != config or study.user_attrs.get("storage") != url:
            study.set_user_attr("config", new_config)
            study.set_user_attr("storage", url)
            changed.append("study records")
        for loss_path in (self.loss_path, self.identity_loss_path):
            if not loss_path.is_file():
                continue
            text = loss_path.read_text()
            line = re.search(r"^  storage: (\S+)\n", text, re.M)
            if line is not None and self._is_own_file(line.group(1), storage):
                text = (text[:line.start()] + f"  storage: {url}\n  storage_relative_to: this "
                        f"file's folder\n" + text[line.end():])
                from autoloss.utils.atomic import write_text_atomic

                write_text_atomic(loss_path, text)
                changed.append(loss_path.name)
        if storage.startswith("sqlite:///") and "study records" in changed:
            import sqlite3
            from contextlib import closing

            with closing(sqlite3.connect(storage[len("sqlite:///"):])) as db:
                db.execute("VACUUM")  # drop the old pages, which still hold the old paths
        return changed

    def _is_own_file(self, recorded: str, storage: str) -> bool:
        """Whether a recorded SQLite/journal URL names this folder's storage file ``storage``:
        it resolves to it from here, or ends with the folder's name and the file's."""
        for scheme in _FILE_SCHEMES:
            if recorded.startswith(scheme) and storage.startswith(scheme):
                path, own = Path(recorded[len(scheme):]), Path(storage[len(scheme):])
                return (path.expanduser().resolve() == own.resolve()
                        or path.parts[-2:] == own.parts[-2:])
        return False
