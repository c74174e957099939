"""Start-up failures explained: driver and socket errors become one :class:`StartupError` each.

``vpn-bot serve`` and ``vpn-bot sandbox`` print the problem and its fix in two lines and exit 2;
nobody has to read a traceback to learn that PostgreSQL is down or the port is taken. Errors are
classified by driver exception types and codes (sqlite3's ``sqlite_errorcode``, PostgreSQL's
SQLSTATE), never by message text. Database URLs are shown without their password.
"""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from bot.errors import StartupError, StoreUnavailable

__all__ = ["database_error", "database_unreachable", "listen_error"]

_URL_FIX = "or point VPNBOT_DATABASE_URL elsewhere"

# PostgreSQL SQLSTATEs a person can fix before starting again.
_PG_MISSING_DB = "3D000"  # invalid_catalog_name
_PG_LOGIN = frozenset({"28000", "28P01"})  # invalid_authorization_specification, invalid_password


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database or ""
    if database.startswith("file:"):  # a URI filename (…?uri=true): the path without its query
        database = database.removeprefix("file:").partition("?")[0]
    return Path(database) if database and database != ":memory:" else None


def _sqlite_error(url: str, exc: sqlite3.Error) -> StartupError:
    path = _sqlite_path(url)
    where = str(path) if path else "the SQLite database"
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_CANTOPEN and path is not None and not path.parent.exists():
        return StartupError(
            f"the directory of the SQLite database {where} does not exist",
            f"create it (mkdir -p {path.parent}) {_URL_FIX}",
        )
    if code == sqlite3.SQLITE_CANTOPEN:
        return StartupError(
            f"cannot open or create the SQLite database {where}",
            f"make its directory writable for this user {_URL_FIX}",
        )
    if code == sqlite3.SQLITE_READONLY:
        return StartupError(
            f"the SQLite database {where} is not writable",
            f"give this user write access to the file and its directory {_URL_FIX}",
        )
    if code == sqlite3.SQLITE_NOTADB:
        return StartupError(f"{where} is not a SQLite database", f"move it away {_URL_FIX}")
    return StartupError(
        f"cannot use the SQLite database {where} ({type(exc).__name__}: {exc})",
        f"check the file {_URL_FIX}",
    )


def _postgres_error(url: str, exc: BaseException) -> StartupError:
    parsed = make_url(url)
    server = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if sqlstate == _PG_MISSING_DB:
        return StartupError(
            f"PostgreSQL database {parsed.database!r} does not exist on {server}",
            f"create it (createdb -h {parsed.host or 'localhost'} {parsed.database}) {_URL_FIX}",
        )
    if sqlstate in _PG_LOGIN:
        return StartupError(
            f"PostgreSQL on {server} refused the login of user {parsed.username!r}",
            "check the user name and password in VPNBOT_DATABASE_URL",
        )
    if isinstance(exc, socket.gaierror):
        return StartupError(
            f"cannot resolve the PostgreSQL host {parsed.host!r}", "check the host in VPNBOT_DATABASE_URL"
        )
    if isinstance(exc, OSError | TimeoutError):
        code = exc.errno if isinstance(exc, OSError) else None
        reason = os.strerror(code).lower() if code else type(exc).__name__
        return StartupError(
            f"cannot reach PostgreSQL on {server} ({reason})",
            f"start the database server, check host and port {_URL_FIX}",
        )
    return StartupError(
        f"cannot use the PostgreSQL database on {server} ({type(exc).__name__}, SQLSTATE {sqlstate})",
        f"check the server's log {_URL_FIX}",
    )


def database_error(url: str, exc: BaseException) -> StartupError | None:
    """The StartupError for a failure to open the store at ``url``; None if it is not one we know."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        return None
    if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None:
        exc = exc.__cause__  # the store's translation of the driver's error: look at the original
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if backend == "sqlite" and isinstance(orig, sqlite3.Error):
        return _sqlite_error(url, orig)
    if backend == "postgresql" and isinstance(exc, DBAPIError | OSError | TimeoutError):
        return _postgres_error(url, exc)
    return None


def database_unreachable(url: str, exc: BaseException) -> bool:
    """Whether ``exc`` says the database server is out of reach (worth waiting for), not misconfigured.

    A refused, reset or timed-out connection to PostgreSQL may heal (the server is starting, a
    failover); a name that does not resolve, a refused login, a missing database or anything about a
    SQLite file needs a person.
    """
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        return False
    if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, DBAPIError) and isinstance(exc.orig, OSError | TimeoutError):
        exc = exc.orig
    return (
        backend == "postgresql"
        and isinstance(exc, OSError | TimeoutError)
        and not isinstance(exc, socket.gaierror)
    )


def listen_error(
    host: str, port: int, exc: OSError, *, setting: str, host_setting: str = "--host"
) -> StartupError:
    """The StartupError for a failure to listen on ``host:port``; ``setting`` and ``host_setting``
    name how to change the port and the address."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"port {port} is already in use ({where})",
            f"stop the other process, or choose another port with {setting}",
        )
    if exc.errno == errno.EACCES:
        return StartupError(
            f"not allowed to listen on {where}", f"use a port above 1023, or choose one with {setting}"
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return StartupError(
            f"{host!r} is not an address of this machine", f"use 0.0.0.0 or 127.0.0.1 with {host_setting}"
        )
    return StartupError(
        f"cannot listen on {where} ({exc.strerror or exc})", f"choose another port with {setting}"
    )
