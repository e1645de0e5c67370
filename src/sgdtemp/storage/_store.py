"""The SQLite results store: one file (WAL, foreign keys on) plus an artifacts folder.

Tables:

- ``sweeps(name, spec, created_at)``: one row per sweep name.
- ``runs``: one row per run key (the hash of the full config, seed and code version): the
  columns named in the design (``key``, ``sweep``, ``status``, ``dataset``, ``model``, ``lr``,
  ``batch_size``, ``momentum``, ``temperature``, ``seed``, ``config``, ``metrics``, ``error``,
  ``started_at``, ``finished_at``, ``host``, ``environment``) and the lease fields ``attempts``,
  ``token``, ``owner``, ``heartbeat_at``. ``sweep`` is the sweep that first registered the key.
- ``sweep_runs(sweep, key, position)``: which runs each sweep asked for (a run shared by two
  sweeps is stored, and run, once).
- ``attempts(token, key, attempt, owner, ...)``: one row per claim, with its outcome.

Status transitions: ``pending → running → ok | diverged | failed | unstable`` (``unstable`` may
also be recorded straight from ``pending`` when a cell is skipped for stability).

Lease rule (what makes a crash resumable). A driver *claims* a run in one transaction: status
``running``, a fresh random ``token``, ``owner = host:pid:process-start-time`` of the driver,
``attempts + 1`` and a ``heartbeat_at`` that the driver refreshes while the run is in flight.
A worker's writes (:meth:`Store.start`, :meth:`Store.finish`) take effect only while the row still
holds their token, so a late write from an abandoned attempt is discarded and every run is recorded
exactly once. A ``running`` row held by someone else is *stale*, and may be claimed again, when its
owner is a process on this host that no longer exists, or when its heartbeat is older than the
lease (for owners on other hosts). A run whose attempts reach the bound is recorded ``failed`` with
the reason instead of being claimed again.

Every write is one ``BEGIN IMMEDIATE`` transaction, so concurrent drivers and workers (processes on
one host; SQLite's WAL needs a local file system) never interleave half-written records.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.storage._env import hostname

__all__ = [
    "FINISHED",
    "STATUSES",
    "AttemptRecord",
    "Claim",
    "NewRun",
    "RunRecord",
    "RunState",
    "Store",
    "process_owner",
]

STATUSES = ("pending", "running", "ok", "diverged", "failed", "unstable")
#: Statuses that end a run; a rerun of the sweep skips these keys.
FINISHED = frozenset({"ok", "diverged", "failed", "unstable"})

SCHEMA_VERSION = 1

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
    created_at TEXT NOT NULL
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

_RUN_COLUMNS = (
    "key, sweep, status, dataset, model, lr, batch_size, momentum, temperature, seed, config, "
    "metrics, error, started_at, finished_at, host, environment, attempts"
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _process_start(pid: int) -> str:
    """The start time of a process in clock ticks since boot (Linux), or '' when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_owner(pid: int | None = None) -> str:
    """The owner string of a process: ``host:pid:start`` (start time guards against pid reuse).

    Example:
        >>> process_owner().split(":")[1] == str(os.getpid())
        True
    """
    pid = os.getpid() if pid is None else pid
    return f"{hostname()}:{pid}:{_process_start(pid)}"


def _owner_alive(owner: str) -> bool | None:
    """Whether the owner process is alive: None when it lives on another host (unknowable here)."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != hostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or _process_start(pid) in ("", start)


@dataclass(frozen=True)
class NewRun:
    """A run to register: its key, full config and the columns that index it.

    Attributes:
        key: the run key (:func:`sgdtemp.storage.run_key` of ``config``).
        config: the full configuration (JSON values).
        dataset: data set name (or a label for user data).
        model: model name (or a label for a user factory).
        lr: learning rate.
        batch_size: minibatch size.
        momentum: heavy-ball momentum.
        temperature: ``lr / (batch_size (1 - momentum))`` from :mod:`sgdtemp.theory.temperature`.
        seed: the run's seed.
        status: ``"pending"`` (to be run) or ``"unstable"`` (recorded without running).
        metrics: metrics to store with a run recorded without running.
    """

    key: str
    config: Mapping[str, Any]
    dataset: str | None = None
    model: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    momentum: float | None = None
    temperature: float | None = None
    seed: int | None = None
    status: str = "pending"
    metrics: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RunRecord:
    """One stored run (the ``runs`` row with its JSON columns parsed)."""

    key: str
    sweep: str
    status: str
    dataset: str | None
    model: str | None
    lr: float | None
    batch_size: int | None
    momentum: float | None
    temperature: float | None
    seed: int | None
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    error: str | None
    started_at: str | None
    finished_at: str | None
    host: str | None
    environment: dict[str, Any] | None
    attempts: int


@dataclass(frozen=True)
class AttemptRecord:
    """One claim of a run: who held it, and how it ended (None while open)."""

    token: str
    key: str
    attempt: int
    owner: str
    claimed_at: str
    started_at: str | None
    host: str | None
    pid: int | None
    finished_at: str | None
    outcome: str | None
    error: str | None


@dataclass(frozen=True)
class Claim:
    """A granted claim: write results for ``key`` with ``token``."""

    key: str
    token: str
    attempt: int


@dataclass(frozen=True)
class RunState:
    """The lease state of a run, as the driver sees it."""

    status: str
    token: str | None
    owner: str | None
    heartbeat_at: float | None
    attempts: int
    error: str | None = field(default=None)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class Store:
    """A results store: one SQLite file plus an artifacts folder beside it.

    Open one per process (connections are not shared across processes); a store may be used from
    several threads of one process.

    Args:
        path: the SQLite file (created with its parent folder unless ``create=False``).
        create: create the file when missing; otherwise a missing file is a :class:`UserError`.
        timeout: seconds to wait for a lock held by another writer.

    Raises:
        UserError: if the file is missing (with ``create=False``), cannot be created, is not an
            SQLite database, or was written by a newer schema.

    Example:
        >>> import tempfile, pathlib
        >>> from sgdtemp.storage import NewRun, run_key
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> with Store(folder / "runs.db") as store:
        ...     key = run_key({"lr": 0.1, "seed": 0})
        ...     store.register("demo", [NewRun(key, {"lr": 0.1, "seed": 0}, lr=0.1, seed=0)])
        ...     claim = store.claim(key, max_attempts=3)
        ...     store.finish(key, claim.token, status="ok", metrics={"loss": 0.5})
        ...     [(r.status, r.metrics) for r in store.runs(sweep="demo")]
        True
        [('ok', {'loss': 0.5})]
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, timeout: float = 60.0):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UserError(f"--db {self.path}: no such store; run `sgdtemp sweep` to create it")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as err:
            raise UserError(f"--db {self.path} cannot be opened ({err})") from err
        self._lock = threading.RLock()
        self.owner = process_owner()
        try:
            self._setup()
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise UserError(f"--db {self.path} is not an sgdtemp store ({err})") from err

    # ----------------------------------------------------------------------------- plumbing

    def _setup(self) -> None:
        conn = self._conn
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 60000")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UserError(
                f"--db {self.path} has schema version {version}, newer than this sgdtemp "
                f"({SCHEMA_VERSION}); upgrade sgdtemp"
            )
        if version < SCHEMA_VERSION:
            with self._tx() as tx:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        tx.execute(statement)
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: takes the write lock up front)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def artifacts(self) -> Path:
        """The artifacts folder beside the file (``runs.db`` → ``runs.artifacts/``)."""
        return self.path.parent / f"{self.path.stem}.artifacts"

    def artifact_dir(self, key: str) -> Path:
        """The (created) folder for one run's artifacts: checkpoints, ``.npz`` arrays."""
        folder = self.artifacts / key
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` (``"ok"`` for a sound file)."""
        with self._lock:
            rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(r[0]) for r in rows)

    # ------------------------------------------------------------------------ registration

    def register(
        self, sweep: str, runs: Sequence[NewRun], *, spec: Mapping[str, Any] | None = None
    ) -> None:
        """Add a sweep and its runs (existing keys are kept as they are, and joined to the sweep).

        Args:
            sweep: the sweep name.
            runs: the runs, in the sweep's order.
            spec: the sweep's spec, stored with the first registration of the name.
        """
        now = _now()
        with self._tx() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO sweeps (name, spec, created_at) VALUES (?, ?, ?)",
                (sweep, None if spec is None else json.dumps(spec, sort_keys=True), now),
            )
            offset = tx.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM sweep_runs WHERE sweep = ?", (sweep,)
            ).fetchone()[0]
            for i, run in enumerate(runs):
                if run.status not in ("pending", "unstable"):
                    raise ValueError(f"a new run is pending or unstable, not {run.status!r}")
                finished = now if run.status == "unstable" else None
                tx.execute(
                    "INSERT OR IGNORE INTO runs (key, sweep, status, dataset, model, lr, "
                    "batch_size, momentum, temperature, seed, config, metrics, finished_at, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run.key,
                        sweep,
                        run.status,
                        run.dataset,
                        run.model,
                        run.lr,
                        run.batch_size,
                        run.momentum,
                        run.temperature,
                        run.seed,
                        json.dumps(run.config, sort_keys=True),
                        None if run.metrics is None else json.dumps(run.metrics, sort_keys=True),
                        finished,
                        now,
                    ),
                )
                tx.execute(
                    "INSERT OR IGNORE INTO sweep_runs (sweep, key, position) VALUES (?, ?, ?)",
                    (sweep, run.key, offset + i),
                )

    def requeue(self, keys: Iterable[str], *, status: str = "failed") -> int:
        """Put finished runs with ``status`` back to ``pending`` with a fresh attempt count.

        Returns:
            How many runs were requeued.
        """
        count = 0
        for key in keys:
            with self._tx() as tx:
                count += tx.execute(
                    "UPDATE runs SET status = 'pending', attempts = 0, token = NULL, error = NULL, "
                    "metrics = NULL, finished_at = NULL WHERE key = ? AND status = ?",
                    (key, status),
                ).rowcount
        return count

    # ------------------------------------------------------------------------------ leases

    def _new_claim(self, tx: sqlite3.Connection, key: str, attempts: int, now: str) -> Claim:
        token = uuid.uuid4().hex
        tx.execute(
            "UPDATE runs SET status = 'running', token = ?, owner = ?, heartbeat_at = ?, "
            "attempts = ?, started_at = NULL, host = NULL WHERE key = ?",
            (token, self.owner, time.time(), attempts + 1, key),
        )
        tx.execute(
            "INSERT INTO attempts (token, key, attempt, owner, claimed_at) VALUES (?, ?, ?, ?, ?)",
            (token, key, attempts + 1, self.owner, now),
        )
        return Claim(key, token, attempts + 1)

    def _fail(self, tx: sqlite3.Connection, key: str, error: str, now: str) -> None:
        tx.execute(
            "UPDATE runs SET status = 'failed', error = ?, finished_at = ?, heartbeat_at = NULL "
            "WHERE key = ?",
            (error, now, key),
        )

    def _close_attempt(
        self, tx: sqlite3.Connection, token: str | None, outcome: str, error: str | None, now: str
    ) -> None:
        tx.execute(
            "UPDATE attempts SET outcome = ?, error = ?, finished_at = ? "
            "WHERE token = ? AND outcome IS NULL",
            (outcome, error, now, token),
        )

    def is_stale(self, state: RunState, *, lease_s: float) -> bool:
        """Whether a ``running`` row is abandoned (see the lease rule in the module docstring)."""
        if state.status != "running" or state.owner is None:
            return False
        if state.owner == self.owner:
            return False
        alive = _owner_alive(state.owner)
        if alive is False:
            return True
        return state.heartbeat_at is None or time.time() - state.heartbeat_at > lease_s

    def claim(self, key: str, *, max_attempts: int, lease_s: float = 120.0) -> Claim | None:
        """Claim a pending run, or a stale running one, for this process.

        A stale run that already used ``max_attempts`` is recorded ``failed`` instead.

        Args:
            key: the run key.
            max_attempts: the bound on claims of one run.
            lease_s: seconds without a heartbeat after which another host's claim is stale.

        Returns:
            The claim, or None when the run is finished, held by a live owner, or was just
            recorded ``failed``.
        """
        now = _now()
        with self._tx() as tx:
            row = tx.execute(
                "SELECT status, token, owner, heartbeat_at, attempts FROM runs WHERE key = ?",
                (key,),
            ).fetchone()
            if row is None:
                raise KeyError(key)
            state = RunState(*row)
            if state.status == "pending":
                return self._new_claim(tx, key, state.attempts, now)
            if not self.is_stale(state, lease_s=lease_s):
                return None
            reason = f"owner {state.owner} stopped during attempt {state.attempts}"
            self._close_attempt(tx, state.token, "abandoned", reason, now)
            if state.attempts >= max_attempts:
                self._fail(tx, key, f"abandoned after {state.attempts} attempts: {reason}", now)
                return None
            return self._new_claim(tx, key, state.attempts, now)

    def retry_lost(self, key: str, token: str, reason: str, *, max_attempts: int) -> Claim | None:
        """After the worker running ``token`` died: claim again, or record ``failed``.

        Returns:
            A new claim to resubmit, or None when the bound is reached (the run is then
            ``failed`` with ``reason``) or the token no longer holds the run.
        """
        now = _now()
        with self._tx() as tx:
            row = tx.execute(
                "SELECT attempts FROM runs WHERE key = ? AND token = ? AND status = 'running'",
                (key, token),
            ).fetchone()
            if row is None:
                return None
            self._close_attempt(tx, token, "lost", reason, now)
            if row[0] >= max_attempts:
                self._fail(tx, key, f"worker died in {row[0]} attempts; last: {reason}", now)
                return None
            return self._new_claim(tx, key, row[0], now)

    def release(self, tokens: Iterable[str]) -> None:
        """Hand claims back (status ``pending``, the attempt not counted): after an interrupt."""
        now = _now()
        for token in tokens:
            with self._tx() as tx:
                released = tx.execute(
                    "UPDATE runs SET status = 'pending', token = NULL, owner = NULL, "
                    "heartbeat_at = NULL, started_at = NULL, attempts = MAX(attempts - 1, 0) "
                    "WHERE token = ? AND status = 'running'",
                    (token,),
                ).rowcount
                if released:
                    self._close_attempt(tx, token, "released", "interrupted", now)

    def heartbeat(self, tokens: Iterable[str]) -> None:
        """Refresh the heartbeat of the runs this process holds."""
        tokens = list(tokens)
        if not tokens:
            return
        now = time.time()
        with self._tx() as tx:
            tx.executemany(
                "UPDATE runs SET heartbeat_at = ? WHERE token = ? AND status = 'running'",
                [(now, t) for t in tokens],
            )

    def states(self, keys: Sequence[str]) -> dict[str, RunState]:
        """The lease state of each key (missing keys are left out)."""
        out: dict[str, RunState] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                marks = ", ".join("?" * len(chunk))
                for key, *rest in self._conn.execute(
                    "SELECT key, status, token, owner, heartbeat_at, attempts, error FROM runs "
                    f"WHERE key IN ({marks})",
                    chunk,
                ):
                    out[key] = RunState(*rest)
        return out

    # ------------------------------------------------------------------------ worker writes

    def start(
        self, key: str, token: str, *, pid: int, host: str, environment: Mapping[str, Any]
    ) -> bool:
        """Record that a worker started the claimed run.

        Returns:
            False (and writes nothing) when ``token`` no longer holds the run: skip the work.
        """
        now = _now()
        with self._tx() as tx:
            ok = tx.execute(
                "UPDATE runs SET started_at = ?, host = ?, environment = ? "
                "WHERE key = ? AND token = ? AND status = 'running'",
                (now, host, json.dumps(environment, sort_keys=True), key, token),
            ).rowcount
            if ok:
                tx.execute(
                    "UPDATE attempts SET started_at = ?, host = ?, pid = ? WHERE token = ?",
                    (now, host, pid, token),
                )
        return bool(ok)

    def finish(
        self,
        key: str,
        token: str,
        *,
        status: str,
        metrics: Mapping[str, Any] | None = None,
        error: str | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record a run's outcome, if ``token`` still holds it (one transaction).

        Args:
            key: the run key.
            token: the claim's token.
            status: one of ``ok``, ``diverged``, ``failed``, ``unstable``.
            metrics: the run's metrics (JSON values).
            error: the reason for a failure.
            environment: replaces the stored environment when given.

        Returns:
            True when recorded; False when the token was stale (the write is discarded).
        """
        if status not in FINISHED:
            raise ValueError(f"a finished status is one of {sorted(FINISHED)}, not {status!r}")
        now = _now()
        with self._tx() as tx:
            ok = tx.execute(
                "UPDATE runs SET status = ?, metrics = ?, error = ?, finished_at = ?, "
                "heartbeat_at = NULL, environment = COALESCE(?, environment), "
                "started_at = COALESCE(started_at, ?) "
                "WHERE key = ? AND token = ? AND status = 'running'",
                (
                    status,
                    None if metrics is None else json.dumps(metrics, sort_keys=True),
                    error,
                    now,
                    None if environment is None else json.dumps(environment, sort_keys=True),
                    now,
                    key,
                    token,
                ),
            ).rowcount
            if ok:
                self._close_attempt(tx, token, status, error, now)
        return bool(ok)

    # ------------------------------------------------------------------------------ reading

    def runs(self, *, sweep: str | None = None, status: str | None = None) -> list[RunRecord]:
        """The stored runs, in sweep order (or registration order without ``sweep``).

        Args:
            sweep: only the runs this sweep asked for (shared runs included).
            status: only runs with this status.
        """
        where, params = [], []
        if sweep is not None:
            query = (
                f"SELECT {', '.join('r.' + c.strip() for c in _RUN_COLUMNS.split(','))} "
                "FROM runs r JOIN sweep_runs s ON s.key = r.key AND s.sweep = ?"
            )
            params.append(sweep)
            order = " ORDER BY s.position"
        else:
            query = f"SELECT {_RUN_COLUMNS} FROM runs r"
            order = " ORDER BY r.rowid"
        if status is not None:
            where.append("r.status = ?")
            params.append(status)
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._conn.execute(query + order, params).fetchall()
        return [self._record(row) for row in rows]

    def run(self, key: str) -> RunRecord | None:
        """One run by key, or None."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else self._record(row)

    @staticmethod
    def _record(row: Sequence[Any]) -> RunRecord:
        values = list(row)
        for i in (10, 11, 16):  # config, metrics, environment
            values[i] = _loads(values[i])
        return RunRecord(*values)

    def attempts(self, key: str | None = None) -> list[AttemptRecord]:
        """Claims (of one run, or all), oldest first."""
        query = (
            "SELECT token, key, attempt, owner, claimed_at, started_at, host, pid, finished_at, "
            "outcome, error FROM attempts"
        )
        params: list[str] = []
        if key is not None:
            query += " WHERE key = ?"
            params.append(key)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY rowid", params).fetchall()
        return [AttemptRecord(*row) for row in rows]

    def sweeps(self) -> list[str]:
        """The sweep names, oldest first."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT name FROM sweeps ORDER BY rowid")]

    def counts(self, *, sweep: str | None = None) -> dict[str, int]:
        """Runs per status (every status present, zeros included)."""
        out = dict.fromkeys(STATUSES, 0)
        if sweep is None:
            query, params = "SELECT status, COUNT(*) FROM runs GROUP BY status", []
        else:
            query = (
                "SELECT r.status, COUNT(*) FROM runs r JOIN sweep_runs s "
                "ON s.key = r.key AND s.sweep = ? GROUP BY r.status"
            )
            params = [sweep]
        with self._lock:
            for status, n in self._conn.execute(query, params):
                out[status] = n
        return out
