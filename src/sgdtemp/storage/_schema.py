"""Opening a store file safely: the schema, its migrations, and what is refused before any write.

A writer (a sweep) creates the schema in a new or empty file and upgrades an older sgdtemp store;
a reader (``export``, ``report``) opens the file read-only (``mode=ro``) and writes nothing. Before
either touches the file it is inspected with reads only, so a file that is not an sgdtemp store (an
SQLite database of another program, random bytes) or a damaged one (``PRAGMA integrity_check``,
``foreign_key_check``) is refused with a one-line :class:`UserError` and left exactly as it was:
no schema written, no WAL switch.

Each finished run row carries ``digest``, the SHA-256 of its stored values (:func:`row_digest`),
written in the transaction that finishes the run and checked whenever the row is read, so a flipped
byte inside a value (which SQLite's own checks cannot see) is refused too, never used.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sgdtemp.errors import UserError

__all__ = [
    "tidy_sidecars",
    "SCHEMA_VERSION",
    "STATUSES",
    "FINISHED",
    "RUN_COLUMNS",
    "open_connection",
    "row_digest",
]

STATUSES = ("pending", "running", "ok", "diverged", "failed", "unstable")
#: Statuses that end a run; a rerun of the sweep skips these keys.
FINISHED = frozenset({"ok", "diverged", "failed", "unstable"})

#: 1: the first schema; 2: ``runs.digest``.
SCHEMA_VERSION = 2

_TABLES = frozenset({"sweeps", "runs", "sweep_runs", "attempts"})

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    spec TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    sweep TEXT NOT NULL REFERENCES sweeps(name),
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    dataset TEXT,
    model TEXT,
    lr REAL,
    batch_size INTEGER,
    momentum REAL,
    temperature REAL,
    seed INTEGER,
    config TEXT NOT NULL,
    metrics TEXT,
    error TEXT,
    started_at TEXT,
    finished_at TEXT,
    host TEXT,
    environment TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    token TEXT,
    owner TEXT,
    heartbeat_at REAL,
    created_at TEXT NOT NULL,
    digest TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS sweep_runs (
    sweep TEXT NOT NULL REFERENCES sweeps(name),
    key TEXT NOT NULL REFERENCES runs(key),
    position INTEGER NOT NULL,
    PRIMARY KEY (sweep, key)
);
CREATE INDEX IF NOT EXISTS sweep_runs_key ON sweep_runs(key);
CREATE TABLE IF NOT EXISTS attempts (
    token TEXT PRIMARY KEY,
    key TEXT NOT NULL REFERENCES runs(key),
    attempt INTEGER NOT NULL,
    owner TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    started_at TEXT,
    host TEXT,
    pid INTEGER,
    finished_at TEXT,
    outcome TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_key ON attempts(key);
"""

#: The stored values of a run, in :class:`~sgdtemp.storage.RunRecord` order; a finished run's
#: ``digest`` covers them all (none changes once the run is finished).
RUN_COLUMNS = (
    "key, sweep, status, dataset, model, lr, batch_size, momentum, temperature, seed, config, "
    "metrics, error, started_at, finished_at, host, environment, attempts"
)
DIGEST_COLUMNS = RUN_COLUMNS


def row_digest(values: Sequence[Any]) -> str:
    """SHA-256 of a run's :data:`RUN_COLUMNS` values (as SQLite returns them)."""
    text = json.dumps(list(values), separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _seal_all(tx: sqlite3.Connection) -> None:
    """Write the digest of every finished run that has none (an upgraded version-1 store)."""
    finished = ", ".join(repr(s) for s in sorted(FINISHED))
    rows = tx.execute(
        f"SELECT {DIGEST_COLUMNS} FROM runs WHERE digest IS NULL AND status IN ({finished})"
    ).fetchall()
    tx.executemany(
        "UPDATE runs SET digest = ? WHERE key = ?", [(row_digest(r), r[0]) for r in rows]
    )


def _inspect(conn: sqlite3.Connection) -> tuple[int, set[str]]:
    """``user_version`` and the table names, read without writing anything."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return int(version), tables


def _columns(sql: str) -> dict[str, set[str]]:
    """Table -> column names, read from ``CREATE TABLE`` statements."""
    tables: dict[str, set[str]] = {}
    for statement in sql.split(";"):
        head, _, body = statement.partition("(")
        if "CREATE TABLE" in head:
            name = head.split()[-1]
            lines = [line.strip().split()[0] for line in body.splitlines() if line.strip()]
            tables[name] = {w for w in lines if w.islower() and w.isidentifier()}
    return tables


_COLUMNS = _columns(_SCHEMA)


def _check_columns(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Refuse a store whose schema text was damaged (a column that no longer exists)."""
    for table, expected in _COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        missing = sorted(expected - have - ({"digest"} if version < 2 else set()))
        if missing:
            raise UserError(
                f"--db {path} is damaged (table {table} lacks column {missing[0]!r}); restore "
                "it from a copy"
            )


def _verify(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a store that SQLite finds damaged (pages, indexes, references)."""
    problems = [" ".join(str(r[0]).split()) for r in conn.execute("PRAGMA integrity_check(3)")]
    if problems != ["ok"]:
        raise UserError(
            f"--db {path} is damaged (SQLite integrity check: {'; '.join(problems)[:160]}); "
            "restore it from a copy"
        )
    dangling = conn.execute("PRAGMA foreign_key_check").fetchall()
    if dangling:
        table = dangling[0][0]
        raise UserError(
            f"--db {path} is damaged ({len(dangling)} rows of {table} refer to missing rows); "
            "restore it from a copy"
        )


def _connect_readonly(path: Path, timeout: float) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    try:
        conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.OperationalError as err:
        if "unable to open" not in str(err):
            raise
        # A WAL store in a folder this process cannot write (no -shm to share): nobody can be
        # writing it either, so read the file as it is.
        conn.close()
        conn = sqlite3.connect(
            uri + "&immutable=1", uri=True, timeout=timeout, check_same_thread=False
        )
    return conn


def sidecars(path: Path) -> list[Path]:
    """SQLite's WAL companions of ``path`` (``-wal`` and ``-shm``) that exist now."""
    return [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def tidy_sidecars(path: Path) -> None:
    """Remove the ``-wal`` / ``-shm`` files a read-only connection left, if no one else uses them.

    A read-only connection cannot delete them; a plain connection that only reads and closes
    does, by SQLite's own rule (only as the last connection, after checkpointing an empty log),
    without writing the database file.
    """
    try:
        conn = sqlite3.connect(path, timeout=0.1)
        try:
            conn.execute("PRAGMA user_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:  # busy, or a folder this process cannot write: leave them
        pass


def open_connection(
    path: Path, *, readonly: bool, create: bool, timeout: float, verify: bool
) -> sqlite3.Connection:
    """Open (and for a writer, set up) the store file; refuse foreign or damaged files untouched.

    Args:
        path: the SQLite file.
        readonly: open with ``mode=ro`` and write nothing (the file must be an sgdtemp store).
        create: a writer may create a missing file (and its folder).
        timeout: seconds to wait for another writer's lock.
        verify: run SQLite's integrity and foreign-key checks on an existing store.

    Returns:
        An autocommit connection (``isolation_level=None``) with foreign keys on.

    Raises:
        UserError: if the file is missing (and may not be created), is a folder, is empty or
            not an sgdtemp store (for a reader), is another program's database, is damaged, or
            was written by a newer schema.
    """
    if path.exists() and not path.is_file():
        raise UserError(f"--db {path} is a folder; give the store's file")
    existed = path.is_file()
    if not existed and (readonly or not create):
        raise UserError(f"--db {path}: no such store; run `sgdtemp sweep` to create it")
    if not readonly:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"--db {path}: its folder cannot be created ({err.strerror})") from err
    conn: sqlite3.Connection | None = None
    try:
        if readonly:
            conn = _connect_readonly(path, timeout)
        else:
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        conn.isolation_level = None
        _setup(conn, path, readonly=readonly, verify=verify and existed, timeout=timeout)
    except BaseException as err:
        if conn is not None:
            conn.close()
        if isinstance(err, UnicodeDecodeError):  # a name or value that is not text any more
            raise UserError(
                f"--db {path} is damaged ({err.reason}); restore it from a copy"
            ) from err
        if not isinstance(err, sqlite3.Error):
            raise
        text = " ".join(str(err).split())[:200]
        if "not a database" in text:
            raise UserError(f"--db {path} is not an sgdtemp store ({text})") from err
        if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError):
            raise UserError(f"--db {path} is damaged ({text}); restore it from a copy") from err
        raise UserError(f"--db {path} cannot be opened ({text})") from err
    return conn


def _setup(
    conn: sqlite3.Connection, path: Path, *, readonly: bool, verify: bool, timeout: float
) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    version, tables = _inspect(conn)
    if version > SCHEMA_VERSION:
        raise UserError(
            f"--db {path} has schema version {version}, newer than this sgdtemp "
            f"({SCHEMA_VERSION}); upgrade sgdtemp"
        )
    empty = version == 0 and not tables
    if not empty and (version == 0 or not _TABLES <= tables):
        shown = ", ".join(sorted(tables)[:5]) or "none"
        raise UserError(
            f"--db {path} is an SQLite database of another program (tables: {shown}), not an "
            "sgdtemp store; choose another file"
        )
    if readonly and empty:
        raise UserError(f"--db {path} is empty, not an sgdtemp store; run `sgdtemp sweep` first")
    if not empty:
        _check_columns(conn, path, version)
    if verify and not empty:
        _verify(conn, path)
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        return
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    if version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version, tables = _inspect(conn)  # another writer may have set it up meanwhile
            if version < SCHEMA_VERSION:
                if "runs" in tables and version == 1:
                    conn.execute("ALTER TABLE runs ADD COLUMN digest TEXT")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                _seal_all(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
