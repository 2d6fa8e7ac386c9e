"""Shared fixtures (a fresh default runtime per test, runtimes that shut down) and test markers."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings

import jumpqueue
from jumpqueue import Config, Runtime

RuntimeFactory = Callable[..., Runtime]

# Children at the default "idle" priority run only when no other process wants the CPU:
# on a machine the suite shares with other busy work they may not run for many seconds,
# and the tests of timeouts and shutdowns wait on them. The runtimes of `make_runtime`
# and `use_runtime`, and the servers of tests/executors/test_process_gunicorn.py, keep
# the server's priority; test_process_children_run_at_the_configured_priority checks
# every value.
TEST_PROCESS_PRIORITY = "normal"


def suite_config(**options: Any) -> Config:
    """`Config(**options)`, with the children at `TEST_PROCESS_PRIORITY` unless options say."""
    options.setdefault("process_priority", TEST_PROCESS_PRIORITY)
    return Config(**options)


# Property tests (tests/chaos): "ci", the default, is small and derandomized, so that
# `make test` stays within its budget and a failure reproduces as it is; "soak"
# (`make soak`, or `pytest --hypothesis-profile=soak`) draws many more examples at
# random, and prints the blob that reproduces a failure.
_QUIET_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci",
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_QUIET_CHECKS,
)
settings.register_profile(
    "soak",
    max_examples=2000,
    stateful_step_count=100,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_QUIET_CHECKS,
)
settings.load_profile("ci")


T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 15.0) -> T:
    """The first truthy value of `probe()`, polled until `timeout`; else fail naming `what`.

    For a state another process changes (a port, a file, a queue): nothing
    there can signal the test, so it polls.
    """
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return value


@contextlib.contextmanager
def django_test_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The test project of tests/web, set up once per process, with an SQLite file as its database.

    Its environment (settings module, database path) holds while the block runs.
    """
    import django
    from django.conf import settings

    database = tmp_path_factory.mktemp("django") / "db.sqlite3"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_SETTINGS_MODULE", "tests.web.apps.django_site")
        patch.setenv("JQTEST_DJANGO_DB", str(database))
        if not settings.configured:
            django.setup()
        yield


def wait_until_waiting_for_room(runtime: Runtime, count: int = 1, timeout: float = 5.0) -> None:
    """Block until `count` callers are blocked in the "wait" overload policy."""
    deadline = time.monotonic() + timeout
    while runtime._ledger.waiting_for_room < count:  # no public signal for this: read the gauge
        if time.monotonic() > deadline:
            raise AssertionError(f"no caller waited for room within {timeout} s")
        threading.Event().wait(0.001)


@pytest.fixture(scope="session", autouse=True)
def gunicorn_without_control_socket() -> Iterator[None]:
    """Every gunicorn the suite starts runs without its control socket (gunicorn >= 25.1).

    Its one default path (in $XDG_RUNTIME_DIR, or ~/.gunicorn) is shared by every
    instance: a second one takes it over, and the first to stop removes it, so
    servers of parallel tests and legs would meddle with each other. No test uses it.
    """
    with pytest.MonkeyPatch.context() as patch:
        if _gunicorn_has_control_socket():
            given = os.environ.get("GUNICORN_CMD_ARGS", "")
            patch.setenv("GUNICORN_CMD_ARGS", f"{given} --no-control-socket".strip())
        yield


def _gunicorn_has_control_socket() -> bool:
    # Older versions refuse the flag that turns it off.
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return False
    return any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS)


@pytest.fixture(autouse=True)
def default_runtime() -> Iterator[Runtime]:
    """Each test gets its own default runtime, shut down after it."""
    runtime = jumpqueue.configure(Config())
    yield runtime
    runtime.shutdown(timeout=5)


@pytest.fixture
def use_runtime() -> Iterator[RuntimeFactory]:
    """Make the default runtime one with these options; each is shut down after the test."""
    made: list[Runtime] = []

    def use(**options: Any) -> Runtime:
        runtime = jumpqueue.configure(suite_config(**options))
        made.append(runtime)
        return runtime

    yield use
    for runtime in made:
        runtime.shutdown(timeout=10)


@pytest.fixture
def make_runtime() -> Iterator[RuntimeFactory]:
    """Build runtimes from config options; every one is shut down after the test."""
    made: list[Runtime] = []

    def make(**options: Any) -> Runtime:
        runtime = Runtime(suite_config(**options))
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.shutdown(timeout=5)


@pytest.fixture
def status_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Status pages and collectors made in the test leave no later runtime observed."""
    from jumpqueue import _observe
    from jumpqueue._runtime import reporting

    monkeypatch.setattr(reporting, "_wanted", False)
    yield
    for observer in _observe.observers:
        if isinstance(observer, reporting.TaskMetrics):
            _observe.remove_observer(observer)


# The markers declared in pyproject.toml are given here, in one place, by what a
# test needs, so that test modules carry none of them; `make test-fast` leaves
# out every test that has one.
MARKS_BY_FIXTURE: dict[str, tuple[str, ...]] = {
    "coordinator": ("server",),  # web/harness.py: servers under test in child processes
    "processes": ("process",),  # backends/conftest.py: workers and private brokers
    "private_redis": ("broker",),
}
MARKS_BY_MODULE: dict[str, tuple[str, ...]] = {
    "backends/test_celery_backend.py": ("broker",),
    "backends/test_rq_backend.py": ("broker",),
    "chaos/test_chaos_disk.py": ("tmpfs",),  # a tmpfs, and ext4 on a loop device
    "chaos/test_chaos_kill.py": ("server", "process"),  # gunicorn, killed again and again
    "executors/test_process.py": ("process",),
    "executors/test_process_gunicorn.py": ("server", "process"),
    "journal/test_journal_gunicorn.py": ("server", "process"),
    "web/test_user_suite.py": ("process",),
    "django_tasks/test_real_server.py": ("server",),
    "django_tasks/test_handoff.py": ("broker", "process"),  # Redis, rq worker
    "web/test_status_page.py": ("server", "process"),  # gunicorn, and headless chromium
    "test_recipes.py": ("process",),  # each example's suite runs in a subprocess
    "test_examples.py": ("server", "process", "broker"),  # real servers, Redis, an rq worker
}
# Single tests in modules that are otherwise quick and self-contained.
MARK_BY_TEST: dict[str, dict[str, str]] = {
    "django_tasks/test_backend.py": {
        "test_backend_a_process_queue_runs_tasks_in_a_child_that_sets_django_up": "process",
    },
    "test_check_cli.py": {
        "test_check_a_reachable_redis_for_rq_and_a_flask_application_factory_gets_a_note": (
            "broker"
        ),
        "test_check_a_reachable_rabbitmq_for_celery_given_on_the_command_line": "broker",
        "test_check_as_a_command_reads_the_environment_and_sets_django_up_as_a_worker_would": (
            "broker"
        ),
    },
    "test_cli.py": {
        "test_cli_demo_serves_a_spike_on_a_real_server_and_accounts_for_every_call": "server",
    },
    "test_public_api.py": {
        "test_public_api_import_uses_only_the_standard_library": "process",
    },
    "test_signals.py": {
        "test_signal_handler_defer_on_top_of_the_process_queue_is_handed_over": "process",
    },
    "test_scheduling.py": {
        "test_priorities_order_the_calls_waiting_for_a_child_process": "process",
    },
    "test_shutdown.py": {
        "test_shutdown_at_interpreter_exit_drains": "process",
        "test_shutdown_in_a_forked_child_starts_over": "process",
    },
    "web/test_contrib_opentelemetry.py": {
        "test_opentelemetry_real_server_process_spans_never_hang_under_the_ended_server_span": (
            "server"
        ),
    },
    "backends/test_handoff.py": {
        "test_handoff_backend_urls_import_their_engine_only_when_opened": "process",
    },
    "journal/test_journal_runtime.py": {
        "test_journal_takes_up_records_of_dead_owners_and_expired_leases_only": "process",
        "test_journal_survives_fork_each_process_with_its_own_connection": "process",
    },
    "journal/test_journal_disk.py": {
        "test_journal_real_full_disk_fails_no_call_and_journaling_resumes_by_itself": "tmpfs",
        "test_journal_in_a_read_only_directory_runs_calls_without_it": "tmpfs",
    },
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the fixtures it uses, its module and its name (the tables above)."""
    for item in items:
        path = item.nodeid.partition("::")[0]  # relative to the project's root
        if not isinstance(item, pytest.Function) or not path.startswith("tests/"):
            continue
        module = path.removeprefix("tests/")
        by_test = MARK_BY_TEST.get(module, {})
        # A renamed test would silently lose its marker and slow `make test-fast` down.
        if missing := [name for name in by_test if not hasattr(item.module, name)]:
            raise pytest.UsageError(f"tests/conftest.py marks {module}::{missing[0]}: no such test")
        names = {
            *(name for fixture in item.fixturenames for name in MARKS_BY_FIXTURE.get(fixture, ())),
            *MARKS_BY_MODULE.get(module, ()),
            *([by_test[item.originalname]] if item.originalname in by_test else []),
        }
        for name in sorted(names):
            item.add_marker(name)
