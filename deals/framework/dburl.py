"""Store URLs: which engine a `store.url` names, the SQLite file, and the password hidden.

    postgresql://user@host:5432/deals     PostgreSQL (also postgres://); the password from the
                                          URL, PGPASSWORD or ~/.pgpass, as libpq reads them
    sqlite:///relative/deals.db           a SQLite file (sqlite:////absolute/deals.db)
    /path/to/deals.db                     a SQLite file (what `Store(path)` takes)

`redact` hides a password wherever a URL is shown: logs, errors, `deals config`.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgresql(target: str | Path) -> bool:
    return isinstance(target, str) and urlsplit(target).scheme.lower() in POSTGRES_SCHEMES


def sqlite_path(target: str | Path) -> Path | str:
    """The file of a SQLite target (`sqlite:///x.db`, `sqlite:////abs/x.db`, a path, or ':memory:')."""
    text = str(target)
    if text == ":memory:":
        return text
    if text.lower().startswith("sqlite:"):
        rest = text[len("sqlite:") :]
        if not rest.startswith("//"):
            raise ValueError(f"{text!r}: a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db")
        rest = rest[2:]
        if "/" not in rest or rest.split("/", 1)[0] not in ("", "localhost"):
            raise ValueError(f"{text!r}: a SQLite URL names a file, not a host (sqlite:////absolute/path.db)")
        path = unquote(rest.split("/", 1)[1].split("?", 1)[0])
        if not path:
            raise ValueError(f"{text!r}: the SQLite URL names no file")
        return Path(path)
    if "://" in text:
        raise ValueError(f"{redact(text)!r}: not a store URL; expected postgresql://..., sqlite:///... or a file path")
    return Path(text)


# user:password@ in a URL's authority, the password up to the last "@" before the path: libpq
# takes a password holding "?", "#", ":" or "@" unencoded, where urllib's split would leave it
# outside the netloc; an "@" after the path (application_name=me@laptop) is not the authority's
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:@/?#]*):(?P<password>[^/]*)@(?P<rest>[^@/]*(?:/.*)?)$", re.S)


def redact(url: str | Path) -> str:
    """The URL with its password (and any `password=` parameter) replaced by ***."""
    text = str(url)
    found = _USERINFO.match(text)
    if found:
        text = f"{found['head']}:***@{found['rest']}"
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() == "password" for key, _ in pairs):
            query = urlencode([(key, "***" if key.lower() == "password" else value) for key, value in pairs], safe="*")
            return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return text


def password_of(url: str) -> str | None:
    found = _USERINFO.match(url)
    password = unquote(found["password"]) if found else None
    try:
        for key, value in parse_qsl(urlsplit(found["rest"] if found else url).query):
            if key.lower() == "password":
                password = value
    except ValueError:
        pass
    return password or None


__all__ = ["POSTGRES_SCHEMES", "is_postgresql", "password_of", "redact", "sqlite_path"]
