"""Storage URLs that are safe to write down: the password of ``dialect://user:PASSWORD@host/db``
becomes ``***`` wherever autoloss records or prints a URL (``run.json``, study attributes, loss
file provenance, summaries, messages). The real URL is only ever held in memory."""

from __future__ import annotations

import re

__all__ = ["MASK", "is_masked", "mask_password", "mask_password_in"]

MASK = "***"

# scheme://user:password@ (the password may hold any character but '@' before the host part)
_CREDENTIALS = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@]*:)(?P<password>.*)"
                          r"@(?P<tail>[^@]*)$")


def mask_password(url: str | None) -> str | None:
    """``url`` with its password replaced by ``***`` (unchanged when it has none, None for None).

    >>> mask_password("postgresql+psycopg2://me:s3cr:t@db.example:5432/studies")
    'postgresql+psycopg2://me:***@db.example:5432/studies'
    >>> mask_password("sqlite:///results/study.db")
    'sqlite:///results/study.db'
    """
    if url is None:
        return None
    match = _CREDENTIALS.match(str(url))
    if match is None or not match.group("password"):
        return str(url)
    return f"{match.group('head')}{MASK}@{match.group('tail')}"


def is_masked(url: str) -> bool:
    """True if ``url`` is a masked URL (its password was replaced, so it cannot be opened)."""
    match = _CREDENTIALS.match(url)
    return match is not None and match.group("password") == MASK


def mask_password_in(text: str, url: str) -> str:
    """``text`` (e.g. a database driver's error message) with the password of ``url`` replaced
    by ``***`` wherever it occurs."""
    match = _CREDENTIALS.match(str(url))
    if match is None or not match.group("password"):
        return text
    return text.replace(match.group("password"), MASK)
