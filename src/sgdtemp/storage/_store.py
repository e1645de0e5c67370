"""The SQLite results store: one file (WAL, foreign keys on) plus an artifacts folder.

Tables (schema and safe opening in :mod:`sgdtemp.storage._schema`):

- ``sweeps(name, spec, created_at)``: one row per sweep name.
- ``runs``: one row per run key (the hash of the full config, seed and code version): the
  columns named in the design (``key``, ``sweep``, ``status``, ``dataset``, ``model``, ``lr``,
  ``batch_size``, ``momentum``, ``temperature``, ``seed``, ``config``, ``metrics``, ``error``,
  ``started_at``, ``finished_at``, ``host``, ``environment``), the lease fields ``attempts``,
  ``token``, ``owner``, ``heartbeat_at``, and ``digest`` (a finished row's checksum).
  ``sweep`` is the sweep that first registered the key.
- ``sweep_runs(sweep, key, position)``: which runs each sweep asked for (a run shared by two
  sweeps is stored, and run, once).
- ``attempts(token, key, attempt, owner, ...)``: one row per claim, with its outcome.

Status transitions: ``pending → running → ok | diverged | failed | unstable`` (``unstable`` may
also be recorded straight from ``pending`` when a cell is skipped for stability).

Lease rule (what makes a crash resumable). A driver *claims* a run in one transaction: status
``running``, a fresh random ``token``, ``owner = host:pid:process-start-time`` of the driver and
a ``heartbeat_at`` that the driver refreshes while the run is in flight. A worker's writes
(:meth:`Store.start`, :meth:`Store.finish`) take effect only while the row still holds their
token, so a late write from an abandoned attempt is discarded and every run is recorded exactly
once. A ``running`` row held by someone else is *stale*, and may be claimed again, when its owner
is a process on this host that no longer exists, or when its heartbeat is older than the lease (for
owners on other hosts).

Attempt rule (what makes a crashed sweep finish on a plain rerun). ``attempts`` counts the tries
that ran on a worker and ended there: the run finished after :meth:`Store.start`, or its worker
died under a live driver (:meth:`Store.retry_lost`). A claim abandoned because its *driver*
stopped (killed, interrupted, its host lost), started or not, costs no attempt: the run was not at
fault. A run whose worker died ``max_attempts`` times is recorded ``failed`` with the reason.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.storage._owner import owner_alive, process_owner
from sgdtemp.storage._records import AttemptRecord, Claim, NewRun, RunRecord, RunState
from sgdtemp.storage._schema import (
    DIGEST_COLUMNS,
    FINISHED,
    RUN_COLUMNS,
    STATUSES,
    open_connection,
    row_digest,
    sidecars,
    tidy_sidecars,
)

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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _qualified(column: str) -> str:
    """``column`` of the runs table ``r`` (an expression such as ``NULL AS digest`` as it is)."""
    column = column.strip()
    return column if " " in column else f"r.{column}"


class Store:
    """A results store: one SQLite file plus an artifacts folder beside it.

    Open one per process (connections are not shared across processes); a store may be used from
    several threads of one process.

    Args:
        path: the SQLite file (created with its parent folder unless ``create=False``).
        create: create the file when missing; otherwise a missing file is a :class:`UserError`.
        readonly: open the file read-only (``mode=ro``) for commands that only read: nothing is
            written, and the file must already be an sgdtemp store. Writing methods then raise
            ``sqlite3.OperationalError``.
        verify: check an existing file with SQLite's integrity and foreign-key checks first (a
            few milliseconds per ten megabytes; workers of a verified sweep skip it).
        timeout: seconds to wait for a lock held by another writer.

    Raises:
        UserError: if the file is missing (with ``create=False`` or ``readonly``), cannot be
            created, is not an SQLite database, is another program's database or (read-only) an
            empty file, is damaged, or was written by a newer schema; the file is then left
            untouched.

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

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        readonly: bool = False,
        verify: bool = True,
        timeout: float = 60.0,
    ):
        self.path = Path(path)
        self.readonly = readonly
        # a read-only connection leaves SQLite's -wal/-shm files behind: remove them on close
        self._tidy = readonly and not sidecars(self.path)
        try:
            self._conn = open_connection(
                self.path, readonly=readonly, create=create, timeout=timeout, verify=verify
            )
        except UserError:
            if self._tidy and sidecars(self.path):
                tidy_sidecars(self.path)
            raise
        self._lock = threading.RLock()
        self.owner = process_owner()
        # a version-1 store opened read-only has no checksums to check
        self._digests = self._conn.execute("PRAGMA user_version").fetchone()[0] >= 2
        self._columns = RUN_COLUMNS + (", digest" if self._digests else ", NULL AS digest")

    # ----------------------------------------------------------------------------- plumbing

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

    def _read(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of a read query; a value SQLite cannot decode is a damaged store (one line)."""
        with self._lock:
            try:
                return self._conn.execute(query, params).fetchall()
            except UnicodeDecodeError as err:
                raise UserError(
                    f"--db {self.path} is damaged ({err.reason}); restore it from a copy"
                ) from err
            except sqlite3.DatabaseError as err:
                text = " ".join(str(err).split())[:160]
                damage = ("decode", "no such column", "no such table", "malformed")
                if isinstance(err, sqlite3.OperationalError) and not any(w in text for w in damage):
                    raise
                raise UserError(
                    f"--db {self.path} is damaged ({text}); restore it from a copy"
                ) from err

    def close(self) -> None:
        """Close the connection (a read-only store removes the WAL files it made appear)."""
        with self._lock:
            self._conn.close()
            if self._tidy and sidecars(self.path):
                self._tidy = False
                tidy_sidecars(self.path)

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
                if finished is not None and tx.execute("SELECT changes()").fetchone()[0]:
                    self._seal(tx, run.key)
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
                    "metrics = NULL, finished_at = NULL, digest = NULL "
                    "WHERE key = ? AND status = ?",
                    (key, status),
                ).rowcount
        return count

    # ------------------------------------------------------------------------------ leases

    def _new_claim(self, tx: sqlite3.Connection, key: str, now: str) -> Claim:
        token = uuid.uuid4().hex
        tx.execute(
            "UPDATE runs SET status = 'running', token = ?, owner = ?, heartbeat_at = ?, "
            "started_at = NULL, host = NULL WHERE key = ?",
            (token, self.owner, time.time(), key),
        )
        number = tx.execute("SELECT COUNT(*) + 1 FROM attempts WHERE key = ?", (key,)).fetchone()
        tx.execute(
            "INSERT INTO attempts (token, key, attempt, owner, claimed_at) VALUES (?, ?, ?, ?, ?)",
            (token, key, number[0], self.owner, now),
        )
        return Claim(key, token, number[0])

    def _seal(self, tx: sqlite3.Connection, key: str) -> None:
        """Write the checksum of a run that just finished (same transaction)."""
        row = tx.execute(f"SELECT {DIGEST_COLUMNS} FROM runs WHERE key = ?", (key,)).fetchone()
        tx.execute("UPDATE runs SET digest = ? WHERE key = ?", (row_digest(row), key))

    def _fail(self, tx: sqlite3.Connection, key: str, error: str, now: str) -> None:
        tx.execute(
            "UPDATE runs SET status = 'failed', error = ?, finished_at = ?, heartbeat_at = NULL "
            "WHERE key = ?",
            (error, now, key),
        )
        self._seal(tx, key)

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
        alive = owner_alive(state.owner)
        if alive is False:
            return True
        return state.heartbeat_at is None or time.time() - state.heartbeat_at > lease_s

    def claim(self, key: str, *, max_attempts: int, lease_s: float = 120.0) -> Claim | None:
        """Claim a pending run, or a stale running one, for this process.

        Claiming costs no attempt (see the attempt rule in the module docstring); a run whose
        workers already died ``max_attempts`` times (after ``max_attempts`` was lowered) is
        recorded ``failed`` instead.

        Args:
            key: the run key.
            max_attempts: the bound on tries whose worker died.
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
            if state.status != "pending":
                if not self.is_stale(state, lease_s=lease_s):
                    return None
                started = tx.execute(
                    "SELECT started_at FROM attempts WHERE token = ?", (state.token,)
                ).fetchone()
                when = "after" if started is not None and started[0] else "before"
                reason = f"its driver {state.owner} stopped {when} the run started"
                self._close_attempt(tx, state.token, "abandoned", reason, now)
            if state.attempts >= max_attempts:
                self._fail(
                    tx,
                    key,
                    f"worker died in {state.attempts} attempts (max_attempts {max_attempts})",
                    now,
                )
                return None
            return self._new_claim(tx, key, now)

    def retry_lost(self, key: str, token: str, reason: str, *, max_attempts: int) -> Claim | None:
        """After the worker running ``token`` died: count the attempt, claim again or fail.

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
            attempts = row[0] + 1
            tx.execute("UPDATE runs SET attempts = ? WHERE key = ?", (attempts, key))
            self._close_attempt(tx, token, "lost", reason, now)
            if attempts >= max_attempts:
                self._fail(tx, key, f"worker died in {attempts} attempts; last: {reason}", now)
                return None
            return self._new_claim(tx, key, now)

    def release(self, tokens: Iterable[str]) -> None:
        """Hand claims back (status ``pending``, no attempt counted): after an interrupt."""
        now = _now()
        for token in tokens:
            with self._tx() as tx:
                released = tx.execute(
                    "UPDATE runs SET status = 'pending', token = NULL, owner = NULL, "
                    "heartbeat_at = NULL, started_at = NULL WHERE token = ? AND status = 'running'",
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
                for key, *rest in self._read(
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

        The attempt counts (``attempts + 1``) when the run had started (:meth:`start`).

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
                "attempts = attempts + (started_at IS NOT NULL), "
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
                self._seal(tx, key)
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
                f"SELECT {', '.join(_qualified(c) for c in self._columns.split(','))} "
                "FROM runs r JOIN sweep_runs s ON s.key = r.key AND s.sweep = ?"
            )
            params.append(sweep)
            order = " ORDER BY s.position"
        else:
            query = f"SELECT {self._columns} FROM runs r"
            order = " ORDER BY r.rowid"
        if status is not None:
            where.append("r.status = ?")
            params.append(status)
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._read(query + order, params)
        return [self._record(row) for row in rows]

    def run(self, key: str) -> RunRecord | None:
        """One run by key, or None."""
        rows = self._read(f"SELECT {self._columns} FROM runs WHERE key = ?", (key,))
        return self._record(rows[0]) if rows else None

    def _record(self, row: Sequence[Any]) -> RunRecord:
        """A row as a record, once its checksum and JSON columns are found intact.

        Raises:
            UserError: naming the run, when its stored values are damaged.
        """
        *values, digest = row
        status = values[2]
        if status in FINISHED and self._digests and digest != row_digest(values):
            raise UserError(
                f"--db {self.path}: the record of run {str(values[0])[:16]} is damaged (its "
                "values do not match their checksum); restore the store from a copy"
            )
        try:
            for i in (10, 11, 16):  # config, metrics, environment
                values[i] = _loads(values[i])
        except (ValueError, TypeError) as err:
            raise UserError(
                f"--db {self.path}: the record of run {str(values[0])[:16]} is damaged "
                f"({err}); restore the store from a copy"
            ) from err
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
            rows = self._read(query + " ORDER BY rowid", params)
        return [AttemptRecord(*row) for row in rows]

    def sweeps(self) -> list[str]:
        """The sweep names, oldest first."""
        with self._lock:
            return [r[0] for r in self._read("SELECT name FROM sweeps ORDER BY rowid")]

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
            for status, n in self._read(query, params):
                out[status] = n
        return out
