"""Any input to a public entry point gives a result or a `JumpQueueError` naming the problem.

And never a lost or double-counted call: what `defer()` and `submit()` accept
is counted once in `submitted`, and ends in exactly one final state.
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import jumpqueue
from jumpqueue import (
    Config,
    ConfigurationError,
    Deferred,
    JumpQueueError,
    OverloadedError,
    Runtime,
    Status,
    TaskOptions,
)
from jumpqueue.cli import main
from jumpqueue.integration import RequestScope

from . import chaos_tasks
from .strategies import (
    CONFIG_FIELDS,
    SAFE_CONFIG_FIELDS,
    TASK_FIELDS,
    calls,
    make_task,
    option_names,
    option_values,
    task_decorations,
)
from .watch import no_thread_dies

T = TypeVar("T")

#: Longest a defer() may take when nothing makes it wait (no "wait" policy, no full backlog).
PROMPT = 1.0
#: Counters of `Stats` that hold calls in one final state, by the status of their handle.
_FINAL_COUNTERS = {
    Status.SUCCEEDED: "succeeded",
    Status.FAILED: "failed",
    Status.TIMED_OUT: "timed_out",
    Status.SKIPPED: "skipped",
    Status.ABANDONED: "abandoned",
    Status.JOURNALED: "journaled",
    Status.HANDED_OFF: "handed_off",
}


def attempt(make: Callable[..., T], /, *args: Any, **kwargs: Any) -> T | JumpQueueError:
    """What make(*args, **kwargs) returns, or the `JumpQueueError` it raises; not another."""
    try:
        return make(*args, **kwargs)
    except JumpQueueError as error:
        return error


def names_the_problem(error: BaseException, names: list[str]) -> bool:
    """True if the error's message is not empty and names one of `names`."""
    text = str(error).lower()
    return bool(text.strip()) and any(name.lower() in text for name in names)


def account_for(runtime: Runtime, handles: list[Deferred[Any]], rejected: int) -> None:
    """After a drained shutdown: each accepted call counted once, and in one final state."""
    stats = runtime.stats()
    assert stats.in_flight == 0, stats
    assert stats.submitted == stats.finished, stats
    assert stats.submitted == len(handles) + rejected, (stats, len(handles), rejected)
    assert all(handle.status.final for handle in handles), [h.status for h in handles]
    by_status = collections.Counter(handle.status for handle in handles)
    for status, counter in _FINAL_COUNTERS.items():
        assert getattr(stats, counter) == by_status[status], (counter, stats, by_status)
    assert sum(stats.shed.values()) == by_status[Status.SHED] + rejected, stats


@contextlib.contextmanager
def serving_request(*, succeeded: bool | None) -> Iterator[None]:
    """A request as the middleware serves it (hold, seal, release); None for no request."""
    if succeeded is None:
        yield
        return
    scope = RequestScope()
    token = scope.activate()
    try:
        yield
    finally:
        scope.deactivate(token)
        scope.seal()
        scope.release(succeeded=succeeded)


def defer_all(
    batch: list[tuple[tuple[Any, tuple[Any, ...], dict[str, Any]], str]],
) -> tuple[list[Deferred[Any]], int]:
    """Each call deferred or submitted as told; the handles, and how many were rejected."""
    handles: list[Deferred[Any]] = []
    rejected = 0
    for (fn, args, kwargs), how in batch:
        if how == "submit":
            outcome = attempt(jumpqueue.submit, fn, *args, **kwargs)
        elif how == "task.defer" and isinstance(fn, jumpqueue.Task):
            outcome = attempt(fn.defer, *args, **kwargs)
        else:
            outcome = attempt(jumpqueue.defer, fn, *args, **kwargs)
        if isinstance(outcome, Deferred):
            handles.append(outcome)
            continue
        assert str(outcome).strip(), repr(outcome)
        if isinstance(outcome, OverloadedError):
            rejected += 1
    return handles, rejected


#: Runtimes the defer() properties run on: small bounds, every overload policy but spill.
_runtime_options = st.fixed_dictionaries(
    {
        "max_workers": st.integers(1, 3),
        "max_pending": st.integers(1, 8),
        "on_overload": st.sampled_from(["wait", "reject", "drop", "inline"]),
        "overload_wait": st.sampled_from([0.0, 0.01]),
        "task_timeout": st.sampled_from([None, 0.5, 5.0]),
        "check_handoff": st.booleans(),
    }
)
_ways = st.sampled_from(["defer", "submit", "task.defer"])


@given(
    options=_runtime_options,
    batch=st.lists(st.tuples(calls(), _ways), max_size=6),
    request=st.sampled_from([None, True, False]),
)
@example(  # a message that would show the value (once ValueError, or the repr's own error)
    options={"max_workers": 1, "max_pending": 1, "on_overload": "reject", "check_handoff": False},
    batch=[((10**5000, (), {}), "defer"), ((chaos_tasks.BrokenRepr(), (), {}), "submit")],
    request=None,
)
def test_chaos_defer_and_submit_give_a_handle_or_a_jumpqueue_error_and_lose_no_call(
    options: dict[str, Any], batch: list[Any], request: bool | None
) -> None:
    with no_thread_dies():
        runtime = jumpqueue.configure(**options)
        with serving_request(succeeded=request):
            handles, rejected = defer_all(batch)
        runtime.shutdown(timeout=10)
    account_for(runtime, handles, rejected)


@given(options=st.dictionaries(option_names(TASK_FIELDS), option_values, max_size=3))
@example(options={"timeout": 10**400})  # once OverflowError
@example(options={"retries": -(10**5000), "name": chaos_tasks.BrokenRepr()})  # once ValueError
def test_chaos_task_options_give_options_or_a_configuration_error_naming_one(
    options: dict[str, Any],
) -> None:
    made = attempt(lambda: TaskOptions.build(**options))
    if isinstance(made, JumpQueueError):
        assert isinstance(made, ConfigurationError), repr(made)
        assert names_the_problem(made, list(options)), (made, options)
        return
    for retries_done in (0, 1, 10):  # a retry comes after a delay that can be waited
        assert 0 <= made.retry_delay(retries_done) < math.inf


@given(decoration=task_decorations())
def test_chaos_task_decorator_gives_a_task_that_defers_or_a_jumpqueue_error(
    decoration: tuple[dict[str, Any], Any],
) -> None:
    options, target = decoration
    declared = attempt(lambda: make_task(options, target))
    if isinstance(declared, ConfigurationError):
        assert names_the_problem(declared, list(options)), (declared, options)
        return
    if isinstance(declared, JumpQueueError):  # not something a task can wrap
        assert str(declared).strip()
        return
    assert callable(declared)
    assert declared.name
    with no_thread_dies():
        handle = attempt(lambda: declared.defer(1))
        jumpqueue.get_runtime().shutdown(timeout=10)
    if isinstance(handle, JumpQueueError):
        assert str(handle).strip()
    else:
        assert handle.status.final


@given(options=st.dictionaries(st.sampled_from(CONFIG_FIELDS), option_values, max_size=3))
@example(options={"task_timeout": -(10**400)})  # once OverflowError
@example(options={"max_workers": -(10**5000)})  # once ValueError
@example(options={"start_method": chaos_tasks.BrokenRepr()})  # once the repr's own error
def test_chaos_config_gives_a_config_or_a_configuration_error_naming_the_field(
    options: dict[str, Any],
) -> None:
    options.pop("journal", None)  # a path: the configure() property gives safe ones
    config = attempt(lambda: Config(**options))
    if isinstance(config, JumpQueueError):
        assert isinstance(config, ConfigurationError), repr(config)
        assert names_the_problem(config, list(options)), (config, options)
        return
    assert config.replace() == config


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A directory for the files the properties make (module-wide: an example runs many times)."""
    directory = Path(tempfile.mkdtemp(prefix="jumpqueue-chaos-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def configure_and_defer(options: dict[str, Any]) -> None:
    """configure() gives a runtime that serves a call promptly, or refuses, naming the option."""
    previous = jumpqueue.get_runtime()
    runtime = attempt(lambda: jumpqueue.configure(**options))
    if isinstance(runtime, JumpQueueError):
        assert isinstance(runtime, ConfigurationError), repr(runtime)
        assert names_the_problem(runtime, list(options)), (runtime, options)
        assert jumpqueue.get_runtime() is previous  # a bad configuration changes nothing
        return
    assert previous.closed
    with no_thread_dies():
        started = time.monotonic()
        handle = attempt(lambda: jumpqueue.defer(chaos_tasks.identity, "configured"))
        assert time.monotonic() - started < PROMPT, "defer() kept its caller waiting"
        runtime.shutdown(timeout=10)
    if isinstance(handle, JumpQueueError):  # e.g. max_pending=1 with "reject"
        assert str(handle).strip()
    else:
        assert handle.status.final
    stats = runtime.stats()
    assert stats.submitted == stats.finished


_journal_paths = st.sampled_from(["journal.db", "sub/dir/journal.db", "", " ", "."])


@given(
    options=st.dictionaries(option_names(SAFE_CONFIG_FIELDS), option_values, max_size=3),
    journal=st.none() | _journal_paths,
)
def test_chaos_configure_gives_a_working_runtime_or_a_configuration_error_naming_the_option(
    options: dict[str, Any], journal: str | None, scratch: Path
) -> None:
    if journal is not None:
        options["journal"] = str(scratch / journal) if journal.strip() else journal
    configure_and_defer(options)


_variable_values = st.one_of(
    st.text(max_size=10),
    st.sampled_from(
        [
            *("0", "1", "-1", "3", "0.5", "1e400", "nan", "inf", "none", "None", "", " 4 "),
            *("true", "off", "yes", "drop", "spill", "json", "normal", "1G", "512MiB"),
            *("x" * 5000, "1" * 5000, "rq+redis://127.0.0.1:6379/0", "fork", "thread"),
        ]
    ),
)
_variable_names = st.sampled_from(CONFIG_FIELDS).map(lambda name: "JUMPQUEUE_" + name.upper())


@given(environ=st.dictionaries(_variable_names, _variable_values, max_size=4))
def test_chaos_config_from_env_gives_a_config_or_a_configuration_error_naming_the_variable(
    environ: dict[str, str],
) -> None:
    config = attempt(lambda: Config.from_env(environ))
    if isinstance(config, JumpQueueError):
        assert isinstance(config, ConfigurationError), repr(config)
        names = [*environ, *(name.removeprefix("JUMPQUEUE_") for name in environ)]
        assert names_the_problem(config, names), (config, environ)


@pytest.fixture(scope="module")
def cli_files(scratch: Path) -> dict[str, Path]:
    """Files the command line is pointed at: a journal with done and failed records, and others."""
    directory = scratch / "cli"
    directory.mkdir()
    journal = directory / "journal.db"
    runtime = Runtime(Config(journal=str(journal)))
    for token in ("a", "b"):
        runtime.defer(chaos_tasks.succeed, token).wait(5)
        runtime.defer(chaos_tasks.fail, token).wait(5)
    runtime.shutdown(timeout=10)
    garbage = directory / "garbage.db"
    garbage.write_bytes(b"not a database " * 100)
    return {
        "JOURNAL": journal,
        "GARBAGE": garbage,
        "MISSING": directory / "missing.db",
        "DIRECTORY": directory,
    }


_cli_tokens = st.one_of(
    st.sampled_from(
        [
            *("status", "drain", "retry", "purge", "--failed", "--done", "--quarantined"),
            *("--older-than", "7d", "0", "-1s", "nan", "1e400d", "x", "--timeout", "-h"),
            *("--app", "tests.chaos.chaos_tasks", "no.such.module:app", "os:nothing", ":"),
            *("--journal", "JOURNAL", "GARBAGE", "MISSING", "DIRECTORY", "--", "demo"),
        ]
    ),
    st.text(max_size=8),
)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`jumpqueue ARGV` in this process: exit status, standard output, standard error."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as leaving:  # argparse: a usage error, or --help
            status = leaving.code if isinstance(leaving.code, int) else 2
    return status, out.getvalue(), err.getvalue()


@given(argv=st.lists(_cli_tokens, max_size=7))
def test_chaos_cli_gives_an_exit_status_and_never_a_traceback(
    argv: list[str], cli_files: dict[str, Path], scratch: Path
) -> None:
    if argv[:1] == ["demo"] and not {"-h", "--help"} & set(argv):
        argv = argv[1:]  # the demo serves a real spike for seconds
    files = {key: str(path) for key, path in cli_files.items()}
    files["JOURNAL"] = str(scratch / "cli-run.db")  # a fresh copy: retry and purge change it
    for suffix in ("-wal", "-shm"):
        Path(files["JOURNAL"] + suffix).unlink(missing_ok=True)
    shutil.copy(cli_files["JOURNAL"], files["JOURNAL"])
    argv = [files.get(token, token) for token in argv]
    if "drain" in argv:
        argv += ["--timeout", "5"]  # a drain of records nobody may run waits for them
    status, out, err = run_cli(argv)
    assert "Traceback" not in out + err, (argv, err)
    if status:
        assert (out + err).strip(), argv  # says why
