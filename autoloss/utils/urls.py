"""Storage URLs that are safe to write down: every credential a storage URL or journal path can
carry becomes ``***`` wherever autoloss records or prints it (``run.json``, study attributes, loss
file provenance, summaries, messages). The real URL is only ever held in memory.

A credential is

- the password of the userinfo, ``dialect://user:PASSWORD@host/db``;
- the value of a query parameter that the driver receives as a secret, named like one
  (``password=``, ``passwd=``, ``password2=``, ``sslpassword=``, ``PWD=``, ``token=``,
  ``api_key=``, ``secret=``, ``auth...``, ``...credential...``, case-insensitive, also
  percent-encoded), or whose value itself holds ``PWD=`` or ``password=`` (an ODBC connection
  string in ``odbc_connect=``).

``journal:PATH`` is read the same way after ``journal:``. A name that looks like a secret but is
not one (``sslkey=/path``) is masked as well: a masked URL is never opened again, the command
that needs it asks for ``--storage URL``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = ["MASK", "is_masked", "mask_password", "mask_password_in"]

MASK = "***"

# scheme://user:password@ (the password may hold any character but '@' before the host part)
_CREDENTIALS = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@]*:)(?P<password>.*)"
                          r"@(?P<tail>[^@]*)$")
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)
_SECRET_IN_VALUE = re.compile(r"(pwd|pass\w*)\s*=", re.IGNORECASE)
_JOURNAL = "journal:"


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every credential in ``url``, in order (possibly empty spans)."""
    offset = len(_JOURNAL) if url.startswith(_JOURNAL) else 0
    rest = url[offset:]
    spans: list[tuple[int, int]] = []
    match = _CREDENTIALS.match(rest)
    if match is not None:
        spans.append((offset + match.start("password"), offset + match.end("password")))
        query_from = offset + match.start("tail")
    else:
        query_from = offset
    mark = url.find("?", query_from)
    if mark < 0:
        return spans
    start = mark + 1
    for part in url[start:].split("&"):
        key, equals, value = part.partition("=")
        if equals and (_SECRET_KEY.search(unquote_plus(key)) or value == MASK
                       or _SECRET_IN_VALUE.search(unquote_plus(value))):
            value_start = start + len(key) + 1
            spans.append((value_start, value_start + len(value)))
        start += len(part) + 1
    return spans


def mask_password(url: str | None) -> str | None:
    """``url`` with every credential replaced by ``***`` (unchanged when it has none, None for
    None): the userinfo password and secret query parameters, see the module docstring.

    >>> mask_password("postgresql+psycopg2://me:s3cr:t@db.example:5432/studies")
    'postgresql+psycopg2://me:***@db.example:5432/studies'
    >>> mask_password("postgresql://alice@db.example/studies?sslpassword=k3y&password=pw&port=1")
    'postgresql://alice@db.example/studies?sslpassword=***&password=***&port=1'
    >>> mask_password("sqlite:///results/study.db")
    'sqlite:///results/study.db'
    """
    if url is None:
        return None
    url = str(url)
    masked, last = [], 0
    for start, end in _secret_spans(url):
        if end > start:  # an empty password is no secret
            masked += [url[last:start], MASK]
            last = end
    return "".join(masked) + url[last:]


def is_masked(url: str) -> bool:
    """True if ``url`` is a masked URL (a credential was replaced, so it cannot be opened)."""
    return any(url[start:end] == MASK for start, end in _secret_spans(url))


def mask_password_in(text: str, url: str) -> str:
    """``text`` (e.g. a database driver's error message or a command line) with every credential
    of ``url`` replaced by ``***`` wherever it occurs, as written in the URL or percent-decoded."""
    url = str(url)
    secrets = {form for start, end in _secret_spans(url) if end > start
               for form in (url[start:end], unquote_plus(url[start:end]))}
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret != MASK:
            text = text.replace(secret, MASK)
    return text
