"""`jumpqueue check`: what would fail once calls leave this process, found before production.

It loads the application (`--app module`, `module:attr`, or `module:factory()`
to call an application factory), then reports one line per finding: the
configuration in force is valid; every `@jumpqueue.task` can be found by its
name in a new process, as a worker or a journal's next owner finds it; the
broker of the configured backend (or of `--backend URL`) answers within
`handoff_timeout`; the journal, if any, can be opened and written.

Exit statuses: 0 no problem; 1 a problem found; 2 the application cannot be loaded.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from . import _default, _tasks
from ._config import Config, redact
from ._exceptions import ConfigurationError, JournalError
from ._journal.store import Store
from .backends import open_backend
from .backends._handoff import HandOffExecutor

if TYPE_CHECKING:
    from .executors._base import Attempt

EXIT_PROBLEM, EXIT_USAGE = 1, 2
OK, NOTE, PROBLEM = "ok", "note", "PROBLEM"
#: Seconds a new process may take to import a module of tasks.
IMPORT_LIMIT = 60.0
#: Marks the new process's answer among whatever the imported modules print.
_ANSWER = "jumpqueue-check:"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One line of the report: ok, a note, or a problem."""

    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind:<8}{self.subject}: {self.detail}"


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `check` to the `jumpqueue` parser."""
    check = commands.add_parser("check", help="what would fail once calls leave this process")
    check.add_argument(
        "--app",
        required=True,
        help="module, module:attr or module:factory() to load: it configures and declares tasks",
    )
    check.add_argument(
        "--backend",
        default=None,
        help="a backend URL to check instead of the configured one (rq+redis://..., celery+...)",
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `jumpqueue check`; returns the exit status."""
    out = sys.stdout if out is None else out
    try:
        _load(args.app)
    except ConfigurationError as error:
        return _report([Finding(PROBLEM, "configuration", str(error))], out)
    except Exception as error:  # noqa: BLE001 -- whatever the application raises, it is reported
        print(
            f"jumpqueue: cannot load the application {args.app}: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        config = _default.get_runtime().config
    except ConfigurationError as error:
        return _report([Finding(PROBLEM, "configuration", str(error)), *check_tasks()], out)
    return _report(
        [
            Finding(OK, "configuration", _describe(config)),
            *check_tasks(),
            *check_backend(config, args.backend),
            *check_journal(config),
        ],
        out,
    )


def _load(app: str) -> None:
    module, _, attribute = app.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as a worker started in the project's directory
    loaded = importlib.import_module(module)
    if attribute:
        factory = attribute.removesuffix("()")
        found = getattr(loaded, factory)
        if factory != attribute:
            found()  # an application factory (Flask's `create_app()`) configures when called


def _report(findings: list[Finding], out: TextIO) -> int:
    for finding in findings:
        print(finding, file=out)
    problems = sum(finding.kind == PROBLEM for finding in findings)
    print(f"{problems} problem(s) found" if problems else "no problem found", file=out)
    return EXIT_PROBLEM if problems else 0


def _describe(config: Config) -> str:
    default = Config()
    changed = [
        f"{field.name}={_shown(getattr(config, field.name))}"
        for field in dataclasses.fields(config)
        if getattr(config, field.name) != getattr(default, field.name)
    ]
    return "valid; " + (", ".join(changed) if changed else "the defaults")


def _shown(value: object) -> str:
    return redact(value) if isinstance(value, str) else repr(value)


# -- tasks -------------------------------------------------------------------------------------


def check_tasks() -> list[Finding]:
    """Each registered task, looked up in a new process as a worker would look it up."""
    tasks = sorted(_tasks.registered(), key=lambda task: task.name)
    if not tasks:
        return [Finding(NOTE, "tasks", "no @jumpqueue.task is declared by the application")]
    errors: dict[str, str | None] = {}
    wanted: list[tuple[str, str, str]] = []
    for task in tasks:
        module = getattr(task.fn, "__module__", None) or "?"
        qualname = getattr(task.fn, "__qualname__", None) or "?"
        if module == "__main__":
            errors[task.name] = (
                "defined in __main__, which a worker cannot import; move it to a module"
            )
        elif "<locals>" in qualname or "<lambda>" in qualname:
            errors[task.name] = (
                "defined inside a function, which a worker cannot import by name; "
                "move it to module level"
            )
        else:
            wanted.append((task.name, module, qualname))
    errors |= _find_elsewhere(wanted)
    return [
        Finding(PROBLEM, f"task {name}", error)
        if error is not None
        else Finding(OK, f"task {name}", "found by its name in a new process")
        for name, error in ((task.name, errors[task.name]) for task in tasks)
    ]


def _find_elsewhere(wanted: list[tuple[str, str, str]]) -> dict[str, str | None]:
    # One new process per module, so that no module's imports (or changes to sys.path)
    # help find another's tasks: a worker may run any task first.
    by_module: dict[str, list[tuple[str, str, str]]] = {}
    for task in wanted:
        by_module.setdefault(task[1], []).append(task)
    # A worker started as documented has Django set up before it imports anything.
    apps = getattr(sys.modules.get("django.apps"), "apps", None)
    django = bool(getattr(apps, "ready", False))
    found: dict[str, str | None] = {}
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for answer in pool.map(
            lambda tasks: _ask_new_process(tasks, django=django), by_module.values()
        ):
            found |= answer
    return found


def _ask_new_process(tasks: list[tuple[str, str, str]], *, django: bool) -> dict[str, str | None]:
    names = [name for name, _, _ in tasks]
    try:
        answer = subprocess.run(
            [sys.executable, "-m", "jumpqueue._check_cli"],
            input=json.dumps({"django": django, "tasks": tasks}),
            capture_output=True,
            text=True,
            timeout=IMPORT_LIMIT,
            cwd=os.getcwd(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return dict.fromkeys(names, f"a new process did not import it within {IMPORT_LIMIT:g} s")
    for line in answer.stdout.splitlines():
        if line.startswith(_ANSWER):
            found: dict[str, str | None] = json.loads(line.removeprefix(_ANSWER))
            return found
    last = (answer.stderr.strip().splitlines() or ["no output"])[-1]
    return dict.fromkeys(names, f"a new process failed before it could look the task up: {last}")


def _answer_in_new_process() -> None:
    # The new process's side: import each task's module as a worker would, and look it up.
    question = json.load(sys.stdin)
    if question["django"]:
        import django  # noqa: PLC0415 -- only for a Django application

        django.setup()
    found = {name: _look_up(name, module, qualname) for name, module, qualname in question["tasks"]}
    print("\n" + _ANSWER + json.dumps(found))


def _look_up(name: str, module: str, qualname: str) -> str | None:
    path = f"{module}.{qualname}"
    try:
        target: Any = importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 -- whatever the import raises, it is reported
        return f"importing {module} in a new process fails: {type(error).__name__}: {error}"
    for part in qualname.split("."):
        target = getattr(target, part, None)
    function = target.fn if isinstance(target, _tasks.Task) else target
    if not callable(function) or _tasks.import_path(function) != path:
        return f"a new process that imports {module} finds no such function at {path}"
    known = _tasks.lookup(name)
    if known is None or _tasks.import_path(known.fn) != path:
        return f"a new process that imports {module} knows no task named {name}"
    return None


# -- the broker and the journal -----------------------------------------------------------------


class _NoHost:
    """The host of a backend opened only to be pinged: it is given no call."""

    def handed_off(self, attempt: Attempt, backend: str) -> None:
        """Never called: nothing is submitted."""

    def handoff_failed(
        self, attempt: Attempt, backend: str, error: BaseException, *, sent: bool
    ) -> None:
        """Never called: nothing is submitted."""


def check_backend(config: Config, url: str | None) -> list[Finding]:
    """The broker of the configured backend, or of `url`, answers within `handoff_timeout`."""
    planned = url is not None and config.backend is None
    if url is not None:
        try:
            config = config.replace(backend=url)
        except ConfigurationError as error:
            return [Finding(PROBLEM, "backend", str(error))]
    backend = config.backend
    if backend is None:
        return []
    subject = f"backend {_shown(backend)}"
    try:
        executor = open_backend(config, _NoHost())
    except ConfigurationError as error:
        return [Finding(PROBLEM, subject, str(error))]
    if executor is None:  # pragma: no cover -- a backend is configured
        return []
    try:
        if isinstance(executor, HandOffExecutor):
            findings = [_ping(subject, executor, config.handoff_timeout)]
        else:
            findings = [Finding(NOTE, subject, "not checked: it offers no ping()")]
    finally:
        executor.close()
    if planned and not config.check_handoff:
        findings.append(
            Finding(
                NOTE,
                "check_handoff",
                "off: turn it on in development and tests (JUMPQUEUE_CHECK_HANDOFF=1) so "
                "that a call this backend could not take fails there, at defer()",
            )
        )
    return findings + _worker_notes()


def _ping(subject: str, executor: HandOffExecutor, timeout: float) -> Finding:
    outcome: list[BaseException | None] = []

    def ping() -> None:
        try:
            executor.ping()
        except Exception as error:  # noqa: BLE001 -- whatever the client raises, it is reported
            outcome.append(error)
        else:
            outcome.append(None)

    started = time.monotonic()
    # A thread of its own: a client given without timeouts cannot hold the check up.
    thread = threading.Thread(target=ping, name="jumpqueue-check-ping", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return Finding(PROBLEM, subject, f"the broker did not answer within {timeout:g} s")
    error = outcome[0]
    if error is not None:
        return Finding(PROBLEM, subject, f"unreachable: {type(error).__name__}: {error}")
    elapsed = (time.monotonic() - started) * 1000
    return Finding(OK, subject, f"the broker answered in {elapsed:.0f} ms")


def _worker_notes() -> list[Finding]:
    notes = []
    settings = os.environ.get("DJANGO_SETTINGS_MODULE")
    if settings and "django" in sys.modules:
        notes.append(
            Finding(
                NOTE,
                "workers (Django)",
                f"a worker must set DJANGO_SETTINGS_MODULE={settings} "
                "and call django.setup() before it runs a task (docs/migration.md)",
            )
        )
    if "jumpqueue.contrib.flask" in sys.modules:
        notes.append(
            Finding(
                NOTE,
                "workers (Flask)",
                "a worker must run each task inside an application "
                "context of the app (docs/migration.md)",
            )
        )
    return notes


def check_journal(config: Config) -> list[Finding]:
    """The journal, if one is configured, can be opened and written."""
    path = config.journal
    if path is None:
        return []
    subject = f"journal {path}"
    existed = os.path.exists(path)
    try:
        # An existing file is opened as it is: a check moves no damaged file aside.
        store = Store.open(path, synchronous=config.journal_synchronous, create=not existed)
    except JournalError as error:
        return [Finding(PROBLEM, subject, str(error))]
    except (sqlite3.Error, OSError) as error:
        return [Finding(PROBLEM, subject, f"cannot be opened: {type(error).__name__}: {error}")]
    try:
        with store.transaction():
            store.probe()
    except sqlite3.Error as error:
        return [Finding(PROBLEM, subject, f"cannot be written: {type(error).__name__}: {error}")]
    finally:
        store.close()
    return [Finding(OK, subject, "opened and written" if existed else "created and written")]


if __name__ == "__main__":
    _answer_in_new_process()
