"""Database check: reachable, and at which schema version — read only, the doctor changes nothing.

A SQLite file that does not exist yet is reported ("``serve`` will create it"), not created; an
existing one is opened read-only, and without creating its ``-wal``/``-shm`` files when they are
not there. PostgreSQL is connected to and ``schema_version`` read, never migrated. Failures are
told apart by the driver's exception types (asyncpg's, sqlite3's error codes, OSError), not by
their message text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg.exceptions as pg
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import URL, Connection, Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bot.doctor.model import DATABASE, Check, Status
from bot.store import SCHEMA_VERSION, async_url
from bot.store.tables import schema_version

__all__ = ["check_database", "database_password", "mask_database_url"]

log = logging.getLogger("bot.doctor")

_CONNECT_TIMEOUT_S = 10


def mask_database_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def database_password(url: str) -> str:
    """The password in ``url``, for the output masker; ``""`` if none."""
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return ""
    return str(password) if password else ""


def _row(status: Status, shown: str, detail: str, fix: str = "") -> Check:
    return Check(DATABASE, "Database", status, f"{shown}: {detail}", fix)


async def check_database(url: str) -> list[Check]:
    """One row: where the database is and at which schema version, or why it cannot be read."""
    shown = mask_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        missing = _missing_sqlite(parsed.database, shown)
        if missing is not None:
            return [missing]
    try:
        if parsed.get_backend_name() == "sqlite":
            # The standard library's sqlite3, on a thread so the event loop does not wait for the file.
            reader = _sqlite_reader(Path(str(parsed.database)))
            version = await asyncio.to_thread(_read_sqlite_version, reader)
        else:
            version = await _read_postgres_version(url)
    except (SQLAlchemyError, OSError, pg.PostgresError) as exc:
        log.debug("doctor: reading the database failed", exc_info=True)
        return [_failure(exc, shown)]
    return [_version_row(version, shown)]


def _read_sqlite_version(engine: Engine) -> int | None:
    try:
        with engine.connect() as conn:
            return _read_version(conn)
    finally:
        engine.dispose()


async def _read_postgres_version(url: str) -> int | None:
    engine = create_async_engine(
        async_url(url), poolclass=NullPool, connect_args={"timeout": _CONNECT_TIMEOUT_S}
    )
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_read_version)
    finally:
        await engine.dispose()


def _missing_sqlite(database: str | None, shown: str) -> Check | None:
    """A row when there is no SQLite file to read (in memory, not created yet); else None."""
    if not database or database == ":memory:":
        return _row(
            Status.WARN,
            shown,
            "an in-memory database: nothing survives a restart.",
            "Use a file for production.",
        )
    path = Path(database)
    if path.exists():
        return None
    folder = path.parent.resolve()
    if not folder.is_dir():
        return _row(
            Status.FAIL,
            shown,
            f"no database yet, and its directory {folder} does not exist, so `serve` cannot create it.",
            "Create the directory, or fix the path in VPNBOT_DATABASE_URL.",
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return _row(
            Status.FAIL,
            shown,
            f"no database yet, and this user may not create files in {folder}.",
            "Give the bot's user write access to the directory, or fix the path in VPNBOT_DATABASE_URL.",
        )
    return _row(Status.PASS, shown, "no database yet; `serve` will create it.")


def _sqlite_reader(path: Path) -> Engine:
    """A read-only engine; ``immutable`` when no -wal file exists, so none is created."""
    query = {"mode": "ro", "uri": "true"}
    if not Path(f"{path}-wal").exists():
        # No writer has uncheckpointed data; a read-only WAL connection would create -wal and -shm.
        query["immutable"] = "1"
    url = URL.create("sqlite", database=f"file:{quote(str(path.resolve()))}", query=query)
    return create_engine(url, poolclass=NullPool)


def _read_version(conn: Connection) -> int | None:
    if not inspect(conn).has_table(schema_version.name):
        return None
    return int(conn.execute(select(func.max(schema_version.c.version))).scalar() or 0)


def _version_row(version: int | None, shown: str) -> Check:
    if version is None:
        return _row(Status.PASS, shown, "reachable, no tables yet; `serve` will create them.")
    if version > SCHEMA_VERSION:
        return _row(
            Status.WARN,
            shown,
            f"schema version {version} is newer than this bot's {SCHEMA_VERSION}.",
            "Another, newer vpn-bot migrated this database: upgrade this one before serving.",
        )
    if version < SCHEMA_VERSION:
        return _row(
            Status.PASS,
            shown,
            f"reachable, schema version {version}; `serve` will migrate it to {SCHEMA_VERSION}.",
        )
    return _row(Status.PASS, shown, f"reachable, schema version {version} (up to date).")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and any driver error SQLAlchemy wrapped (``orig``)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [current.__cause__, current.__context__, orig if isinstance(orig, BaseException) else None]


_SQLITE_CODES = {
    sqlite3.SQLITE_CANTOPEN: (
        "the SQLite file cannot be opened.",
        "Make sure the bot's user may read the file and its directory (VPNBOT_DATABASE_URL).",
    ),
    sqlite3.SQLITE_PERM: (
        "the SQLite file cannot be opened.",
        "Make sure the bot's user may read the file and its directory (VPNBOT_DATABASE_URL).",
    ),
    sqlite3.SQLITE_NOTADB: (
        "the file is not a SQLite database.",
        "Point VPNBOT_DATABASE_URL at the bot's database file, or at a path where none exists yet.",
    ),
    sqlite3.SQLITE_CORRUPT: (
        "the SQLite file is damaged.",
        "Restore it from a backup, or move it aside so `serve` starts a new one.",
    ),
    sqlite3.SQLITE_BUSY: (
        "the SQLite file is locked by another process.",
        "Run the doctor again in a moment.",
    ),
}

# Most specific first: InvalidPasswordError is an InvalidAuthorizationSpecificationError.
_BY_TYPE: tuple[tuple[type[BaseException], str, str], ...] = (
    (
        pg.InvalidAuthorizationSpecificationError,
        "PostgreSQL refused the user or password.",
        "Fix the user and password in VPNBOT_DATABASE_URL (or pg_hba.conf on the server).",
    ),
    (
        pg.InvalidCatalogNameError,
        "the server is up but the database does not exist.",
        "Create it (e.g. `createdb NAME`) or fix the database name in VPNBOT_DATABASE_URL.",
    ),
    (
        pg.InsufficientPrivilegeError,
        "PostgreSQL does not let this user read the bot's tables.",
        "Grant the user access to the database (the bot needs to create and write its tables).",
    ),
    (socket.gaierror, "the database host name does not resolve.", "Fix the host in VPNBOT_DATABASE_URL."),
    (
        ConnectionRefusedError,
        "nothing accepts connections at that host and port.",
        "Start PostgreSQL, or fix the host and port in VPNBOT_DATABASE_URL.",
    ),
    (
        TimeoutError,
        "the database did not answer in time.",
        "Check that the host is reachable (firewall, security group) and PostgreSQL is running.",
    ),
)


def _failure(exc: BaseException, shown: str) -> Check:
    chain = list(_chain(exc))
    for kind, detail, fix in _BY_TYPE:
        if any(isinstance(e, kind) for e in chain):
            return _row(Status.FAIL, shown, detail, fix)
    for e in chain:
        # Extended codes (e.g. SQLITE_CANTOPEN_ISDIR) carry the primary code in the low byte.
        primary = e.sqlite_errorcode & 0xFF if isinstance(e, sqlite3.Error) else None
        if primary in _SQLITE_CODES:
            detail, fix = _SQLITE_CODES[primary]
            return _row(Status.FAIL, shown, detail, fix)
    return _row(
        Status.FAIL,
        shown,
        f"could not read the database ({type(exc).__name__}).",
        "Check VPNBOT_DATABASE_URL; run with VPNBOT_LOG_LEVEL=DEBUG for the details.",
    )
