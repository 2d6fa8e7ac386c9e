"""The process executor: child processes under a supervisor thread, one call per child at once."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigurationError, InvalidCallError, MemoryLimitError, WorkerCrashedError
from .._ratelimit import RateLimitedLog
from .._reentry import hand_over, take
from .._threads import daemon_thread
from . import _process_calls, _process_os
from ._line import WaitingLine
from ._process_os import (
    Child,
    ChildTraceback,
    TreeScanner,
    Watcher,
    describe_exit,
    emit_log,
    forget_inherited_forkserver,
    kill_tree,
    open_pidfd,
    stop_children,
    watch_memory,
)
from ._process_priority import say_shortfall

if TYPE_CHECKING:
    from .._config import Config
    from .._deferred import Deferred
    from ._base import Attempt, ExecutorHost

logger = logging.getLogger("jumpqueue")

#: Seconds between two reads of the children's resident memory, when it is limited.
WATCH_INTERVAL = 0.1
#: Seconds children get between SIGTERM and SIGKILL when the executor closes.
TERMINATE_GRACE = 1.0
#: Seconds before the first retry after a child could not start, and the longest wait.
SPAWN_BACKOFF = (0.05, 10.0)
#: Seconds a child may take to start (import the application) before it counts as failed.
STARTUP_TIMEOUT = 120.0

_WAKE, _PIPE, _EXIT = "wake", "pipe", "exit"
_LOST_FORKSERVER = 255


def address_space_limit(memory_limit: int | None) -> int | None:
    """The address-space cap a child sets on itself for a given `memory_limit`."""
    return memory_limit


class ProcessExecutor:
    """Runs calls in up to `max_processes` child processes, one call per child at a time.

    A child that runs past its timeout, or past `memory_limit`, is killed with
    its process group and replaced; a child that dies fails only its own call.
    One supervisor thread starts, feeds, watches and reaps the children.
    """

    name = "process"

    def __init__(self, config: Config, host: ExecutorHost) -> None:
        methods = multiprocessing.get_all_start_methods()
        method = config.start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if method not in methods:
            raise ConfigurationError(f"start_method {method!r} is not available on this platform")
        self._context = multiprocessing.get_context(method)
        self._method = method
        self._host = host
        self._size = config.max_processes
        self._memory_limit = config.memory_limit
        self._max_tasks = config.max_tasks_per_child
        self._idle_timeout = config.process_idle_timeout
        self._priority = config.process_priority
        say_shortfall(self._priority)
        self._lock = threading.Lock()
        self._queue = WaitingLine()
        self._children: list[Child] = []  # serving, or starting up
        self._leaving: list[Child] = []  # retired or killed, not reaped yet
        self._target = 0  # children the pool keeps: grows with demand, shrinks when idle
        self._thread: threading.Thread | None = None
        self._closed = False
        self._asleep = False  # the supervisor waits, and nobody has woken it yet
        self._submitted = 0  # attempts queued ever: the supervisor sleeps only if none is new
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._watcher = Watcher()
        self._watcher.add(self._wake_r, (None, _WAKE))
        self._spawn_failures = 0
        self._next_spawn = 0.0
        self._next_watch = 0.0
        self._scanner = TreeScanner()
        self._spawn_log = RateLimitedLog(logger, interval=10.0)
        _live_executors.add(self)

    @property
    def workers(self) -> int:
        """Child processes alive and serving (or starting up)."""
        return len(self._children)

    @property
    def stuck(self) -> int:
        """Always 0: a child past its timeout is killed, not left running."""
        return 0

    def validate(self, deferred: Deferred[Any]) -> None:
        """Refuse at once a call that cannot cross into a child process.

        Raises:
            InvalidCallError: a lambda, a closure, a function not importable by
                its name, an unpicklable bound object, or unpicklable arguments.
        """
        main = sys.modules.get("__main__")
        _process_calls.check_call(
            deferred,
            main_importable=self._method == "fork" or hasattr(main, "__file__"),
            memory_limit=self._memory_limit,
        )

    def submit(self, attempt: Attempt) -> None:
        """Queue the attempt for the supervisor; never blocks."""
        lock = self._lock
        if not lock.acquire(False) and not take(lock):
            hand_over(self.submit, attempt)  # a signal handler's call, on top of this code
            return
        try:
            if self._closed:
                return  # the runtime settled every call before closing us
            self._queue.append(attempt)
            self._submitted += 1
            if self._thread is None:
                self._thread = daemon_thread(self._supervise, "jumpqueue-process")
                self._thread.start()
        finally:
            lock.release()
        self._wake()

    def expire(self, attempt: Attempt) -> None:
        """Kill the child running the attempt, with what it started; a fresh one replaces it."""
        with self._lock:
            child = attempt.worker
            if not isinstance(child, Child) or child.attempt is not attempt:
                return  # it answered just now
            child.killed = True
        kill_tree(child.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop every child: idle ones exit, running ones are terminated, then killed."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            thread = self._thread
        _live_executors.discard(self)
        if thread is None:
            self._release()
        elif thread is not threading.current_thread():
            self._wake()
            thread.join(TERMINATE_GRACE + 5.0)

    # -- the supervisor thread ---------------------------------------------------------------

    def _wake(self) -> None:
        # One byte per sleep: a busy supervisor sees new attempts before it sleeps again.
        with self._lock:
            if not self._asleep:
                return
            self._asleep = False
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            self._wake_w.send(b"\0")

    def _supervise(self) -> None:
        try:
            while not self._closed:
                self._step_safely()
        finally:
            self._stop_children()

    def _step_safely(self) -> None:
        try:
            self._step()
        except Exception:  # a bug here must not strand every later call
            logger.exception("jumpqueue: process supervisor error")
            time.sleep(0.1)

    def _step(self) -> None:
        submitted = self._submitted
        self._assign()
        now = time.monotonic()
        self._spawn(now)
        deadline = self._housekeeping(now)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        with self._lock:
            if self._submitted != submitted or self._closed:
                timeout = 0.0  # queued while we looked: no wake-up byte was sent for it
            else:
                self._asleep = True
        ready = self._watcher.wait(timeout)
        with self._lock:
            self._asleep = False
        # Pipes first: what a child said before it died comes before its death.
        ready.sort(key=lambda item: item[1] == _EXIT)
        for child, kind in ready:
            if kind == _WAKE:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            elif kind == _PIPE:
                self._receive(child)
            else:
                self._reap(child)

    def _assign(self) -> None:
        while True:
            with self._lock:
                child = next(
                    (c for c in self._children if c.ready and c.attempt is None and not c.killed),
                    None,
                )
                if child is None or not self._queue:
                    busy = sum(c.attempt is not None for c in self._children)
                    self._target = max(self._target, min(self._size, busy + len(self._queue)))
                    return
                attempt = child.attempt = self._queue.popleft()
                attempt.worker = child
            if not self._host.attempt_started(attempt):
                child.attempt = None
                continue
            try:
                data = _process_calls.message(attempt.deferred)
            except Exception as error:  # noqa: BLE001 -- its arguments changed since defer()
                child.attempt = None
                self._host.attempt_finished(
                    attempt, None, InvalidCallError(f"cannot send the call to a child: {error}")
                )
                continue
            with contextlib.suppress(OSError):  # the child died: its sentinel reports it
                child.conn.send_bytes(data)

    def _spawn(self, now: float) -> None:
        while not self._closed and len(self._children) < self._target and now >= self._next_spawn:
            try:
                child = _process_os.start_child(
                    self._context,
                    memory_limit=address_space_limit(self._memory_limit),
                    log_level=logger.getEffectiveLevel(),
                    priority=self._priority,
                )
            except Exception as error:  # noqa: BLE001 -- fork, exec, memory, disk: retry later
                self._spawn_failed(now, f"{type(error).__name__}: {error}")
                return
            with self._lock:
                self._children.append(child)
            self._watcher.add(child.conn, (child, _PIPE))
            self._watcher.add(child.process.sentinel, (child, _EXIT))

    def _spawn_failed(self, now: float, reason: str) -> None:
        self._spawn_failures += 1
        first, longest = SPAWN_BACKOFF
        delay = min(longest, first * 2 ** (self._spawn_failures - 1))
        self._next_spawn = now + delay
        self._spawn_log.warning(
            "jumpqueue: could not start a child process (%s); retrying in %.2f s, "
            "calls wait meanwhile",
            reason,
            delay,
        )

    def _housekeeping(self, now: float) -> float | None:
        """Retire idle children, watch resident memory; return when to look again."""
        deadlines = []
        if self._next_spawn > now and len(self._children) < self._target:
            deadlines.append(self._next_spawn)
        for child in self._children:
            if not child.ready and not child.killed:
                if now >= child.started + STARTUP_TIMEOUT:
                    child.killed = True  # its death counts as a failed start
                    kill_tree(child.pid, signal.SIGKILL)
                else:
                    deadlines.append(child.started + STARTUP_TIMEOUT)
        if self._idle_timeout is not None:
            for child in list(self._children):
                if child.ready and child.attempt is None:
                    retire_at = child.idle_since + self._idle_timeout
                    if retire_at <= now:
                        self._retire(child, shrink=True)
                    else:
                        deadlines.append(retire_at)
        if self._memory_limit is not None and sys.platform == "linux":
            if now >= self._next_watch:
                self._next_watch = now + WATCH_INTERVAL
                watch_memory(list(self._children), self._memory_limit, self._scanner)
            deadlines.append(self._next_watch)
        return min(deadlines, default=None)

    def _retire(self, child: Child, *, shrink: bool) -> None:
        with self._lock:
            self._children.remove(child)
            self._leaving.append(child)
            if shrink:
                self._target -= 1
        with contextlib.suppress(OSError):
            child.conn.send_bytes(b"")  # EOF alone does not reach a forked child holding both ends
        self._watcher.discard(child.conn)
        child.conn.close()

    def _receive(self, child: Child) -> bool:
        """Handle one message from the child; False once its pipe is closed."""
        try:
            data = child.conn.recv_bytes()
        except (EOFError, OSError):
            self._watcher.discard(child.conn)  # it died: its sentinel reports it
            return False
        try:
            message = pickle.loads(data)  # noqa: S301 -- from our own child
        except Exception as error:  # noqa: BLE001 -- a result class the parent cannot import
            message = ("raised", RuntimeError(f"the result cannot be unpickled: {error}"), "")
        self._handle(child, message)
        return not child.conn.closed

    def _handle(self, child: Child, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "log":
            emit_log(child, message[1])
            return
        if kind == "ready":
            child.ready = True
            self._spawn_failures = 0
            return
        with self._lock:
            attempt, child.attempt = child.attempt, None
            child.served += 1
            child.idle_since = time.monotonic()
        result, error = None, None
        if kind == "ok":
            result = message[1]
        elif kind == "raised":
            error = message[1]
            if message[2]:
                error.__cause__ = ChildTraceback(message[2])
        elif self._memory_limit is None:  # "memory": out of memory, with no limit set
            error = MemoryError(f"{message[1]} in child process {child.pid}")
        else:  # "memory": the child's address space is full
            error = MemoryLimitError(f"{message[1]} in child process {child.pid}", pid=child.pid)
        spent = self._max_tasks is not None and child.served >= self._max_tasks
        # A child whose fork server died has served its last call.
        orphan = child.pidfd is not None
        if (kind == "memory" or spent or orphan) and child in self._children:
            self._retire(child, shrink=False)
        if attempt is not None and not attempt.settled:  # settled: timed out and killed
            self._host.attempt_finished(attempt, result, error)

    def _reap(self, child: Child) -> None:
        while not child.conn.closed and child.conn.poll() and self._receive(child):
            pass  # what it said before it died
        orphan = child.pidfd is not None
        child.process.join(1.0)
        exitcode = None if orphan else child.process.exitcode
        lost = exitcode == _LOST_FORKSERVER and self._method == "forkserver"
        if lost and _process_os.alive(child.pid):
            # multiprocessing says 255 when the fork server died: the child itself lives on.
            if self._adopt(child):
                return
            kill_tree(child.pid, signal.SIGKILL)
        with self._lock:
            attempt, child.attempt = child.attempt, None
            serving = child in self._children
            (self._children if serving else self._leaving).remove(child)
        self._watcher.discard(child.conn)
        self._watcher.discard(child.process.sentinel)
        if child.pidfd is not None:
            self._watcher.discard(child.pidfd)
        child.close()
        if not serving:
            return
        if orphan:
            how = "ended after its fork server died (its exit status is unknown)"
        else:
            how = "lost its fork server and was killed" if lost else describe_exit(exitcode)
        if not child.ready:
            self._spawn_failed(time.monotonic(), f"it {how} while starting up")
        elif attempt is not None and not attempt.settled:
            deferred = attempt.deferred
            error = child.reason or WorkerCrashedError(
                f"{deferred.name} [{deferred.id}]: its child process {child.pid} {how}",
                pid=child.pid,
                exitcode=exitcode,
            )
            self._host.attempt_finished(attempt, None, error)
        elif not child.killed:
            logger.warning("jumpqueue: idle child process %d %s; replacing it", child.pid, how)

    def _adopt(self, child: Child) -> bool:
        """Let a busy child whose fork server died finish its call; False if it cannot.

        A whole-group stop (`kill -TERM -PGID`, systemd) ends the fork server at once;
        its children need no fork server to run, only to report their exit status.
        """
        if not child.ready or child.killed or child.attempt is None or child.conn.closed:
            return False
        pidfd = open_pidfd(child.pid)
        if pidfd is None:
            return False
        child.pidfd = pidfd
        self._watcher.discard(child.process.sentinel)
        self._watcher.add(pidfd, (child, _EXIT))
        logger.warning(
            "jumpqueue: the fork server of child process %d ended; the child finishes "
            "its call, then a fresh one replaces it",
            child.pid,
        )
        return True

    def _stop_children(self) -> None:
        with self._lock:
            children = [*self._children, *self._leaving]
            self._children.clear()
            self._leaving.clear()
        self._release()
        stop_children(children, grace=TERMINATE_GRACE)

    def _release(self) -> None:
        self._watcher.close()
        self._wake_r.close()
        self._wake_w.close()

    def _forget(self) -> None:
        # In a forked process the children are the parent's: drop our copies of their
        # pipes (so that they still see the parent close them), and stay closed.
        self._closed = True
        _live_executors.discard(self)
        processes: set[object] = getattr(multiprocessing.process, "_children", set())
        for child in [*self._children, *self._leaving]:
            child.conn.close()
            if child.pidfd is not None:
                os.close(child.pidfd)
            processes.discard(child.process)
        self._children.clear()
        self._leaving.clear()
        self._release()


_live_executors: weakref.WeakSet[ProcessExecutor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for executor in list(_live_executors):
        executor._forget()
    forget_inherited_forkserver()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
