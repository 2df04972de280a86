"""A throwaway PostgreSQL server for the tests (``initdb`` + ``pg_ctl`` in a temporary folder,
on 127.0.0.1, trust authentication), or the one named by ``$AUTOLOSS_TEST_POSTGRES``.

A missing server binary or driver skips the tests that need it, with the reason, unless
``$AUTOLOSS_REQUIRE_POSTGRES`` is set (``.ci/run`` sets it once it has the server binaries):
then it is an error, so CI cannot pass by skipping them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV_URL = "AUTOLOSS_TEST_POSTGRES"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _unavailable(reason: str) -> None:
    if os.environ.get("AUTOLOSS_REQUIRE_POSTGRES"):
        pytest.fail(f"PostgreSQL tests required ($AUTOLOSS_REQUIRE_POSTGRES) but: {reason}")
    pytest.skip(f"no PostgreSQL server for the tests: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_url() -> Iterator[str]:
    """Yield the URL of an empty database on a running server; stop a server it started."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("the driver psycopg2 is not installed (pip install 'autoloss[postgres]')")
    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL]
        return
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        _unavailable("initdb / pg_ctl not found (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="autoloss-pg-"))
    data, port = folder / "data", _free_port()
    as_user: list[str] = []
    log = folder / "server.log"
    try:
        if os.geteuid() == 0:  # the server refuses to run as root
            runuser = shutil.which("runuser")
            if runuser is None:
                raise OSError("running as root without runuser to start it as 'postgres'")
            shutil.chown(folder, user="postgres")  # LookupError: no such user
            as_user = [runuser, "-u", "postgres", "--"]
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8"], check=True, capture_output=True)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60",
                        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)
    except (subprocess.CalledProcessError, OSError, LookupError) as err:
        shutil.rmtree(folder, ignore_errors=True)
        _unavailable(f"starting a server failed: {err}")
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    try:
        yield url
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of ``url``; return its URL."""
    import psycopg2

    base = url.rsplit("/", 1)[0]
    dsn = base.replace("postgresql+psycopg2://", "postgresql://") + "/postgres"
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return f"{base}/{name}"
