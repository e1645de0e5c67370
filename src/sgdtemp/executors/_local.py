"""The local executor: a process pool that survives the death of any of its workers.

Unlike :class:`concurrent.futures.ProcessPoolExecutor`, which breaks as a whole (every pending
future fails) when one worker dies, this pool fails only the task the dead worker was running, with
:class:`~sgdtemp.executors.WorkerLost`, and starts a replacement worker. Each worker runs one task
at a time, with one intra-op thread (:func:`~sgdtemp.executors.limit_threads`), and exits when its
parent process dies, so a killed driver leaves no orphans behind for long.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import importlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from sgdtemp.executors._base import AbstractExecutor, WorkerLost, limit_threads, usable_cpus

__all__ = ["LocalExecutor", "RemoteTraceback"]


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (set as the exception's ``__cause__``)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(1)


def _worker_main(conn: Connection, parent_pid: int, threads: int, preload: tuple[str, ...]) -> None:
    """A worker's loop: receive ``(fn, args, kwargs)``, send ``(ok, value, traceback)``."""
    limit_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what a Ctrl-C means
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    for module in preload:  # best effort: a task that needs a missing module reports it
        try:
            importlib.import_module(module)
        except Exception:
            pass
    limit_threads(threads)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as exc:  # the task did not unpickle here
            reply: tuple[bool, Any, str | None] = (False, exc, traceback.format_exc())
        else:
            if message is None:  # shut down: skip interpreter teardown (seconds with torch)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
            fn, args, kwargs = message
            try:
                reply = (True, fn(*args, **kwargs), None)
            except BaseException as exc:
                reply = (False, exc, traceback.format_exc())
            sys.stdout.flush()
            sys.stderr.flush()
        try:
            conn.send(reply)
        except (BrokenPipeError, ConnectionResetError, EOFError):  # the driver is gone: stop
            return
        except Exception as exc:  # the result or exception does not pickle
            text = "".join(traceback.format_exception(exc))
            conn.send((False, RuntimeError(f"result could not be sent back: {exc!r}"), text))


@dataclass
class _WorkItem:
    future: cf.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    current: _WorkItem | None = field(default=None)


def _describe_exit(process: BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class LocalExecutor(AbstractExecutor):
    """A pool of worker processes on this machine (the default executor).

    Args:
        max_workers: number of worker processes (default: the CPUs this process may use,
            :func:`~sgdtemp.executors.usable_cpus`).
        mp_context: multiprocessing start method; ``"spawn"`` (the default) is safe with torch,
            whose thread pools do not survive ``fork``.
        threads_per_worker: intra-op threads of each worker.
        preload: modules each worker imports as it starts (e.g. ``("torch",)``), so that the
            first task does not pay for them; failures are ignored.
        eager: start every worker now (they import ``preload`` while the caller prepares its
            tasks) instead of on the first submissions.

    Example:
        >>> with LocalExecutor(2) as pool:
        ...     pool.submit(pow, 2, 10).result()
        1024
    """

    name = "local"

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        mp_context: str = "spawn",
        threads_per_worker: int = 1,
        preload: Sequence[str] = (),
        eager: bool = False,
    ):
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self._max_workers = max_workers or usable_cpus()
        self._ctx: Any = multiprocessing.get_context(mp_context)
        self._threads = threads_per_worker
        self._preload = tuple(preload)
        self._queue: collections.deque[_WorkItem] = collections.deque()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._thread: threading.Thread | None = None
        self._shutdown = False
        if eager:
            with self._lock:
                for _ in range(self._max_workers):
                    self._start_worker()
                self._ensure_manager()

    @property
    def max_workers(self) -> int:
        """Number of worker processes."""
        return self._max_workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` in a worker process (all three must pickle)."""
        future: cf.Future[Any] = cf.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.append(_WorkItem(future, fn, args, kwargs))
            self._ensure_manager()
        self._wake()
        return future

    def _ensure_manager(self) -> None:
        """Start the manager thread (lock held)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._manage, name="sgdtemp-local-executor", daemon=True
            )
            self._thread.start()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; finish queued ones (or cancel them) and stop the workers."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft().future.cancel()
            thread = self._thread
        self._wake()
        if wait and thread is not None:
            thread.join()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.shutdown(wait=True)
        else:  # an error or Ctrl-C in the caller: stop now rather than finish running tasks
            self.terminate()

    def terminate(self) -> None:
        """Cancel queued tasks and kill the workers (running tasks fail with WorkerLost)."""
        with self._lock:
            self._shutdown = True
            while self._queue:
                self._queue.popleft().future.cancel()
            for worker in self._workers:
                if worker.process.is_alive():
                    worker.process.kill()
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join()

    # ------------------------------------------------------------------------- manager thread

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"x")
        except OSError:
            pass

    def _start_worker(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, os.getpid(), self._threads, self._preload),
            name="sgdtemp-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()
        self._workers.append(_Worker(process, parent_conn))

    def _dispatch(self) -> None:
        """Hand queued work to idle workers, starting workers as needed (lock held)."""
        while self._queue:
            idle = next((w for w in self._workers if w.current is None), None)
            if idle is None:
                if len(self._workers) >= self._max_workers:
                    return
                self._start_worker()
                continue
            item = self._queue.popleft()
            if not item.future.set_running_or_notify_cancel():
                continue
            try:
                idle.conn.send((item.fn, item.args, item.kwargs))
            except OSError:  # the worker is gone; its sentinel reports it
                idle.current = item
                return
            except Exception as exc:  # the task does not pickle
                item.future.set_exception(exc)
                continue
            idle.current = item

    def _receive(self, worker: _Worker) -> None:
        try:
            ok, value, text = worker.conn.recv()
        except (EOFError, OSError):
            return  # died while answering: the sentinel handles it
        item, worker.current = worker.current, None
        if item is None:
            return
        if ok:
            item.future.set_result(value)
        else:
            if text is not None:
                value.__cause__ = RemoteTraceback(text)
            item.future.set_exception(value)

    def _reap(self, worker: _Worker) -> None:
        if worker.current is not None and worker.conn.poll():
            self._receive(worker)
        worker.process.join()
        self._workers.remove(worker)
        worker.conn.close()
        if worker.current is not None:
            pid = worker.process.pid
            message = f"worker process {pid} {_describe_exit(worker.process)}"
            worker.current.future.set_exception(WorkerLost(message))

    def _manage(self) -> None:
        while True:
            with self._lock:
                self._dispatch()
                busy = any(w.current is not None for w in self._workers)
                if self._shutdown and not self._queue and not busy:
                    break
                workers = list(self._workers)
            conns = {w.conn: w for w in workers}
            sentinels = {w.process.sentinel: w for w in workers}
            ready = multiprocessing.connection.wait([self._wake_r, *conns, *sentinels])
            with self._lock:
                if self._wake_r in ready:
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                for obj in ready:
                    if obj in conns:
                        self._receive(conns[obj])
                for obj in ready:
                    if obj in sentinels:
                        self._reap(sentinels[obj])
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 1.0
        for worker in self._workers:
            # Every worker is idle here; one still importing its preload modules is stopped.
            worker.process.join(timeout=max(deadline - time.monotonic(), 0.0))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers.clear()
