"""Runtime configuration: one frozen, self-validating value, readable from the environment."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import urllib.parse
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from ._choices import (
    BACKEND_SCHEMES,
    BACKENDS,
    HANDOFF_POLICIES,
    JOURNAL_ERROR_POLICIES,
    JOURNAL_SYNCHRONOUS,
    OVERLOAD_POLICIES,
    PROCESS_PRIORITIES,
    SERIALIZERS,
    START_METHODS,
    HandoffPolicy,
    JournalErrorPolicy,
    JournalSynchronous,
    OverloadPolicy,
    ProcessPriority,
    Serializer,
    StartMethod,
)
from ._exceptions import ConfigurationError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .backends import Backend

ENV_PREFIX = "JUMPQUEUE_"

#: A smaller address space cannot even start an interpreter.
MIN_MEMORY_LIMIT = 16 * 1024**2
_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
#: A lease renewed less often than this would have to be renewed all the time.
MIN_JOURNAL_LEASE = 1.0
#: Longest a value is shown in an error message.
_SHOWN_LENGTH = 200


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """How a `Runtime` bounds and times its work. Every field has a working default.

    Args:
        max_workers: threads running plain functions at once.
        max_async: coroutines running at once (I/O-bound coroutines are cheap:
            the bound is high).
        max_pending: calls admitted and not yet finished (held, pending or
            running); past it the overload policy decides. It bounds memory:
            a call costs about half a KiB plus its arguments.
        max_queue_wait: seconds a call admitted now may expect to wait for a
            worker (the calls pending, at the pace the oldest of them has
            seen calls start) before new calls get the overload policy (as if
            the backlog were full), or None for no such bound: it bounds how
            late work starts when calls come faster than they run.
        on_overload: default policy when the backlog is full: "wait",
            "reject", "drop", "inline", or "spill" (to the journal; needs `journal`).
        overload_wait: seconds the "wait" policy blocks before it rejects.
        task_timeout: default seconds a call may run, or None (or `math.inf`,
            as `JUMPQUEUE_TASK_TIMEOUT=inf` gives) for no limit.
        slow_call_threshold: seconds after which a running call is logged once
            as slow (logger "jumpqueue", WARNING) with its id, task, elapsed
            time and where it is: its thread's stack, or its coroutine's (like
            PHP-FPM's slowlog); None (the default) for no such log.
        shutdown_timeout: seconds shutdown waits for running and pending calls.
        max_stuck_threads: threads past their timeout that may linger while
            replacements serve the pool; past it the pool shrinks instead.
        max_processes: child processes of the "process" executor (per server
            worker process), started as calls need them.
        memory_limit: bytes a child process may use, or None for no limit; a
            size such as "512MiB" or "1G" (powers of 1024) is accepted too. It
            caps the child's address space and, on Linux, its resident memory.
        max_tasks_per_child: calls a child serves before it is replaced, or
            None for no limit (PHP-FPM's `pm.max_requests`).
        process_idle_timeout: seconds an idle child lives before it exits, or
            None to keep it.
        start_method: "forkserver", "spawn" or "fork"; None for forkserver
            where the platform has it, else spawn.
        process_priority: the children's CPU priority, so that CPU-heavy calls
            take what the requests leave: "idle" (nice 19 and, on Linux,
            `SCHED_IDLE`: a core only when nothing else wants it), "low" (nice
            10), or "normal" (the server's). A child's niceness is at least the
            server's own, and on Linux its session's autogroup gets it too.
        backend: where admitted calls go instead of the local pools: None for
            the local pools, a URL such as "rq+redis://127.0.0.1:6379/0" or
            "celery+amqp://guest:guest@127.0.0.1:5672//", or a backend object
            (`jumpqueue.backends.rq.RQBackend(...)`).
        backend_queue: the engine's queue to send to; None for "default" with
            RQ and the Celery app's default queue with Celery.
        check_handoff: validate every call at `defer()` as a hand-off to a
            backend would (its function importable by name, outside
            `__main__`; its arguments carried by the serializer), while it
            still runs here: `InvalidCallError` at once, in development and
            tests, for an app that will use `backend=` later. With `backend`
            set, calls are validated so anyway, testing modes included.
        handoff_timeout: seconds one hand-off may take to connect and send.
        on_handoff_error: default fallback for a call the backend cannot take:
            "local" (run it in the local pools), "journal" (spill it to the
            journal, to forward later), or "raise" (fail it with `HandOffError`).
        journal: path of the SQLite journal that keeps accepted calls across
            crashes and restarts, or None (the default) to touch no disk.
        journal_synchronous: "FULL" (a commit survives power loss) or
            "NORMAL" (it survives a crash of the process, not of the machine).
        serializer: how journaled arguments are stored: "json", or "pickle"
            to opt in for every task (`TaskOptions.serializer` overrides it).
        journal_retention: seconds done and skipped records (and the outcomes
            `jumpqueue.result()` reads in them) are kept; failed and
            quarantined ones are kept until purged.
        journal_lease: seconds a process owns a record without renewing its
            lease (it renews it every third of that while it lives).
        on_journal_error: when the journal cannot be written (full disk,
            read-only file): "memory" runs the call without it; "overload"
            applies the task's overload policy as if the backlog were full.
        status_dir: a directory where each server worker process writes a
            snapshot of its counters once a second, so that the status page
            and the Prometheus collector of any worker show the sum over all
            of them (one directory per server; it is created, private to its
            user); None (the default) writes nothing: they show one process.

    Raises:
        ConfigurationError: a value is out of range; the message names the field.
    """

    max_workers: int = 8
    max_async: int = 1000
    max_pending: int = 10_000
    max_queue_wait: float | None = 30.0
    on_overload: OverloadPolicy = "wait"
    overload_wait: float = 1.0
    task_timeout: float | None = None
    slow_call_threshold: float | None = None
    shutdown_timeout: float = 20.0
    max_stuck_threads: int = 8
    max_processes: int = 2
    memory_limit: int | None = None
    max_tasks_per_child: int | None = None
    process_idle_timeout: float | None = 300.0
    start_method: StartMethod | None = None
    process_priority: ProcessPriority = "idle"
    # Not in the repr: a broker URL may carry a password.
    backend: str | Backend | None = dataclasses.field(default=None, repr=False)
    backend_queue: str | None = None
    check_handoff: bool = False
    handoff_timeout: float = 2.0
    on_handoff_error: HandoffPolicy = "local"
    journal: str | None = None
    journal_synchronous: JournalSynchronous = "FULL"
    serializer: Serializer = "json"
    journal_retention: float = 7 * 24 * 3600.0
    journal_lease: float = 30.0
    on_journal_error: JournalErrorPolicy = "memory"
    status_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_workers", "max_async", "max_pending"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("max_stuck_threads", self.max_stuck_threads, minimum=0)
        check_seconds("overload_wait", self.overload_wait, allow_zero=True)
        check_seconds("shutdown_timeout", self.shutdown_timeout, allow_zero=True)
        if self.task_timeout is not None and self.task_timeout != math.inf:
            check_seconds("task_timeout", self.task_timeout, allow_zero=False)
        if self.max_queue_wait is not None:
            check_seconds("max_queue_wait", self.max_queue_wait, allow_zero=False)
        if self.slow_call_threshold is not None:
            check_seconds("slow_call_threshold", self.slow_call_threshold, allow_zero=False)
        check_choice("on_overload", self.on_overload, OVERLOAD_POLICIES)
        _check_int("max_processes", self.max_processes, minimum=1)
        size: object = self.memory_limit
        if isinstance(size, str):
            object.__setattr__(self, "memory_limit", parse_size("memory_limit", size))
        if self.memory_limit is not None:
            _check_int("memory_limit", self.memory_limit, minimum=MIN_MEMORY_LIMIT)
        if self.max_tasks_per_child is not None:
            _check_int("max_tasks_per_child", self.max_tasks_per_child, minimum=1)
        if self.process_idle_timeout is not None:
            check_seconds("process_idle_timeout", self.process_idle_timeout, allow_zero=False)
        if self.start_method not in (None, *START_METHODS):
            raise ConfigurationError(
                f"start_method must be one of {', '.join(START_METHODS)} or None, "
                f"not {shown(self.start_method)}"
            )
        check_choice("process_priority", self.process_priority, PROCESS_PRIORITIES)
        check_backend("backend", self.backend)
        if self.backend_queue is not None and (
            not isinstance(self.backend_queue, str) or not self.backend_queue
        ):
            raise ConfigurationError(
                f"backend_queue must be a non-empty str or None, not {shown(self.backend_queue)}"
            )
        if not isinstance(self.check_handoff, bool):
            raise ConfigurationError(
                f"check_handoff must be a bool, not {shown(self.check_handoff)}"
            )
        check_seconds("handoff_timeout", self.handoff_timeout, allow_zero=False)
        check_choice("on_handoff_error", self.on_handoff_error, HANDOFF_POLICIES)
        self._check_journal()
        status_dir = _path("status_dir", self.status_dir, "a directory path")
        object.__setattr__(self, "status_dir", status_dir)

    def _check_journal(self) -> None:
        object.__setattr__(self, "journal", _path("journal", self.journal, "a file path"))
        synchronous: object = self.journal_synchronous
        if isinstance(synchronous, str):
            object.__setattr__(self, "journal_synchronous", synchronous.upper())
        check_choice("journal_synchronous", self.journal_synchronous, JOURNAL_SYNCHRONOUS)
        check_choice("serializer", self.serializer, SERIALIZERS)
        check_choice("on_journal_error", self.on_journal_error, JOURNAL_ERROR_POLICIES)
        check_seconds("journal_retention", self.journal_retention, allow_zero=False)
        check_seconds("journal_lease", self.journal_lease, allow_zero=False)
        if self.journal_lease < MIN_JOURNAL_LEASE:
            raise ConfigurationError(
                f"journal_lease must be >= {MIN_JOURNAL_LEASE} seconds, not {self.journal_lease!r}"
            )
        if self.on_overload == "spill" and self.journal is None:
            raise ConfigurationError(
                "on_overload='spill' writes calls to the journal: "
                "it needs journal='path/to/file.db'"
            )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Unpack[ConfigOptions]
    ) -> Config:
        """Read `JUMPQUEUE_<NAME>` variables; keyword overrides win over the environment.

        A `JUMPQUEUE_*` variable that names no option is ignored with a warning
        naming the closest option (a typo such as `JUMPQUEUE_MAX_WORKER`).

        Raises:
            ConfigurationError: a variable cannot be parsed or is out of range.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        fields = dataclasses.fields(cls)
        for field in fields:
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _parse(field, raw)
        if len(values) < sum(name.startswith(ENV_PREFIX) for name in environ):
            _warn_unknown_variables(environ, [ENV_PREFIX + field.name.upper() for field in fields])
        values.update(overrides)
        return cls.build(**values)

    @classmethod
    def build(cls, **values: Any) -> Config:
        """Like `Config(...)`, but an unknown name is a `ConfigurationError` naming it."""
        check_names(cls, values, "configuration option")
        return cls(**values)

    def replace(self, **changes: Unpack[ConfigOptions]) -> Config:
        """A copy with some fields changed, validated like a new one."""
        # Not dataclasses.asdict(): it deep-copies, and a backend object is shared, not copied.
        current = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return type(self).build(**{**current, **changes})


class ConfigOptions(TypedDict, total=False):
    """`Config`'s fields as keyword options (`configure(**options)`), for mypy to check."""

    max_workers: int
    max_async: int
    max_pending: int
    max_queue_wait: float | None
    on_overload: OverloadPolicy
    overload_wait: float
    task_timeout: float | None
    slow_call_threshold: float | None
    shutdown_timeout: float
    max_stuck_threads: int
    max_processes: int
    memory_limit: int | str | None
    max_tasks_per_child: int | None
    process_idle_timeout: float | None
    start_method: StartMethod | None
    process_priority: ProcessPriority
    backend: str | Backend | None
    backend_queue: str | None
    check_handoff: bool
    handoff_timeout: float
    on_handoff_error: HandoffPolicy
    journal: str | os.PathLike[str] | None
    journal_synchronous: JournalSynchronous
    serializer: Serializer
    journal_retention: float
    journal_lease: float
    on_journal_error: JournalErrorPolicy
    status_dir: str | os.PathLike[str] | None


def _warn_unknown_variables(environ: Mapping[str, str], known: list[str]) -> None:
    options = [name.removeprefix(ENV_PREFIX) for name in known]
    for variable in environ:
        if not variable.startswith(ENV_PREFIX) or variable in known:
            continue
        # Matched without the prefix they all share, which would make any name look close.
        close = difflib.get_close_matches(variable.removeprefix(ENV_PREFIX).upper(), options, n=1)
        warnings.warn(
            f"{variable} is not a jumpqueue option and is ignored"
            + (f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""),
            UserWarning,
            stacklevel=4,
        )


def check_names(cls: type[Any], values: Mapping[str, object], kind: str) -> None:
    """Raise `ConfigurationError` naming any of `values` that is not a field of the dataclass."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigurationError(
            f"unknown {kind}(s) {', '.join(unknown)}; known options are {', '.join(sorted(known))}"
        )


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise `ConfigurationError` unless value is one of `choices` (a registry of `_choices`)."""
    if value not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, not {shown(value)}")


def check_backend(name: str, value: object) -> None:
    """Raise `ConfigurationError` unless value is None, a backend URL or a backend object.

    A URL is checked for its engine, its broker's scheme (where the engine
    takes a known few), its port, and a Redis database number; the engine's
    library is not imported here (it checks what is left when the backend opens).
    """
    if value is None:
        return
    if isinstance(value, str):
        engine, plus, rest = value.partition("+")
        if not plus or "://" not in rest or engine not in BACKENDS:
            raise ConfigurationError(
                f"{name} must be a URL such as 'rq+redis://127.0.0.1:6379/0' or "
                f"'celery+amqp://guest:guest@127.0.0.1:5672//' (engines: "
                f"{', '.join(BACKENDS)}), not {redact(value)!r}"
            )
        # Celery takes several brokers to fail over to, separated by ";".
        for url in rest.split(";") if engine == "celery" else [rest]:
            problem = _broker_url_problem(engine, url)
            if problem is not None:
                raise ConfigurationError(f"{name} {redact(value)!r}: {problem}")
        return
    if not callable(getattr(value, "open", None)) or not isinstance(
        getattr(value, "name", None), str
    ):
        raise ConfigurationError(
            f"{name} must be a backend URL or a backend object (with a name and open()), "
            f"not {type(value).__name__}"
        )


def _broker_url_problem(engine: str, url: str) -> str | None:
    # What is wrong with one broker URL (the part after "<engine>+"), or None.
    scheme = url.partition("://")[0]
    schemes = BACKEND_SCHEMES.get(engine)
    if not scheme:
        return "the broker URL has no scheme"
    if schemes is not None and scheme not in schemes:
        return f"{engine} speaks to {', '.join(s + '://' for s in schemes)}, not {scheme}://"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as error:  # an unclosed "[" of an IPv6 address, say
        return f"the broker URL cannot be parsed ({error})"
    try:
        parts.port  # noqa: B018 -- parsed on access: a bad port raises here
    except ValueError as error:
        return f"the port is not a number from 0 to 65535 ({error})"
    if scheme in {"redis", "rediss", "unix"}:
        # Redis clients would read a database that is not a number as 0, or fail late.
        path_db = parts.path.replace("/", "") if scheme != "unix" else ""
        for db in (path_db, *urllib.parse.parse_qs(parts.query).get("db", ())):
            if db and not db.isdigit():
                return f"the Redis database must be a number, as in /0 or ?db=0, not {db!r}"
    return None


def redact(url: str) -> str:
    """The URL with its password, if any, replaced by `***` (for messages and logs)."""
    scheme, found, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not found or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{location}"


def _path(name: str, value: object, what: str) -> str | None:
    # A path option: None, or a non-empty str or path-like, with "~" expanded.
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be {what} or None, not {shown(value)}")
    return os.path.expanduser(value)


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, not {shown(value)}")


def check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    """Raise `ConfigurationError` unless value is a finite, non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, not {shown(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int no float can hold: no clock counts that far
        finite = False
    if not finite or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be {bound} seconds, not {shown(value)}")


def shown(value: object) -> str:
    """`repr(value)` for an error message: shortened, and never failing itself.

    An int too long to write out (past `sys.get_int_max_str_digits()`), or an
    object whose `__repr__` raises, is described instead.
    """
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 -- a message must not fail on the value it names
        if isinstance(value, int):
            return f"an int of about {int(value.bit_length() * math.log10(2))} digits"
        return f"a {type(value).__name__} that cannot be shown"
    return text if len(text) <= _SHOWN_LENGTH else f"{text[:_SHOWN_LENGTH]}..."


def parse_size(name: str, text: str) -> int:
    """Bytes in a size such as "512MiB", "1G" or "1048576" (units are powers of 1024).

    Raises:
        ConfigurationError: text is not a size; the message names `name`.
    """
    number = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = number[-1:] if number[-1:] in _SIZE_UNITS else ""
    try:
        return int(float(number.removesuffix(unit)) * _SIZE_UNITS[unit]) if unit else int(number)
    except (ValueError, OverflowError):
        raise ConfigurationError(
            f"{name} must be a number of bytes or a size like '512MiB', not {text!r}"
        ) from None


def _parse(field: dataclasses.Field[Any], raw: str) -> object:
    variable = ENV_PREFIX + field.name.upper()
    text = raw.strip()
    kind = str(field.type)
    if "None" in kind and text.lower() in ("", "none"):
        return None
    if field.name == "memory_limit":
        return parse_size(variable, text)
    if kind == "bool":
        if text.lower() not in _BOOLEANS:
            raise ConfigurationError(f"{variable}={raw!r} is not a bool (1, 0, true, false)")
        return _BOOLEANS[text.lower()]
    try:
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise ConfigurationError(f"{variable}={raw!r} is not a valid {kind}") from None
    return text
