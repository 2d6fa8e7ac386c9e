"""`jumpqueue check`: each finding and the exit status, on tiny applications the tests write."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import jumpqueue
from jumpqueue import _tasks
from jumpqueue.cli import main

from .backends.conftest import BIN, RABBITMQ_URL, REDIS_URL, REPO, free_port, require

WriteApp = Callable[..., str]


@pytest.fixture(autouse=True)
def no_django_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks here see no Django that an earlier test of this process set up.

    The check sets Django up in its new processes when it is set up here
    (tests/django_tasks does, with settings a new process cannot find).
    """
    apps = getattr(sys.modules.get("django.apps"), "apps", None)
    if apps is not None:
        monkeypatch.setattr(apps, "ready", False)


@pytest.fixture
def write_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteApp]:
    """Write modules into a project directory, the current one, with a registry of tasks its own.

    Each call writes modules named after its keywords plus one fresh suffix (an
    `import other` among them is rewritten to match), and returns the first name.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # also undoes the check's own sys.path entry
    monkeypatch.setattr(_tasks, "_registry", {})
    for variable in ("JUMPQUEUE_BACKEND", "JUMPQUEUE_JOURNAL", "JUMPQUEUE_CHECK_HANDOFF"):
        monkeypatch.delenv(variable, raising=False)
    written: list[str] = []

    def write(**modules: str) -> str:
        suffix = uuid.uuid4().hex[:8]
        for name, source in modules.items():
            text = textwrap.dedent(source)
            for other in modules:
                text = text.replace(f"import {other}\n", f"import {other}_{suffix} as {other}\n")
            (tmp_path / f"{name}_{suffix}.py").write_text(text)
            written.append(f"{name}_{suffix}")
        return f"{next(iter(modules))}_{suffix}"

    yield write
    for name in written:
        sys.modules.pop(name, None)
    jumpqueue.get_runtime().shutdown(timeout=5)  # the one the application configured, if any


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, str], str]:
    """Run `jumpqueue check`: its status, each finding's subject → kind and detail, the summary."""
    status = main(["check", *argv])
    return (status, *parse(capsys.readouterr().out))


def parse(report: str) -> tuple[dict[str, str], str]:
    """Each finding's subject → its kind and detail; and the summary line."""
    *lines, summary = report.splitlines()
    findings = {}
    for line in lines:
        kind, finding = line.split(maxsplit=1)
        subject, detail = finding.split(": ", 1)
        assert subject not in findings
        findings[subject] = f"{kind} {detail}"
    return findings, summary


GOOD_APP = """
    import jumpqueue

    jumpqueue.configure(max_workers=3)

    @jumpqueue.task(retries=2)
    def send_receipt(order_id: int) -> None:
        pass

    app = object()
"""


def test_check_reports_the_configuration_in_force_and_tasks_found_elsewhere(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write_app(app=GOOD_APP)
    status, findings, summary = check(capsys, "--app", f"{app}:app")
    assert findings == {
        "configuration": "ok valid; max_workers=3",
        f"task {app}.send_receipt": "ok found by its name in a new process",
    }
    assert (status, summary) == (0, "no problem found")


def test_check_finds_each_task_a_worker_could_not_find(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write_app(
        app="""
        import os
        import sys

        import jumpqueue
        import helpers

        sys.path.append(os.path.join(os.path.dirname(__file__), "vendor"))  # this process only
        import vendored

        def make():
            @jumpqueue.task
            def closure() -> None: ...

            return closure

        closure = make()

        def in_main() -> None: ...

        in_main.__module__ = "__main__"
        jumpqueue.task(in_main)

        @jumpqueue.task
        def rebound() -> None: ...

        rebound = None
        renamed = jumpqueue.task(name="shop.renamed")(helpers.plain)
        """,
        helpers="""
        def plain() -> None: ...
        """,
    )
    helpers = app.replace("app_", "helpers_")
    vendor = Path.cwd() / "vendor"
    vendor.mkdir()
    (vendor / "vendored.py").write_text(
        "import jumpqueue\n\n@jumpqueue.task(name='vendored.task')\ndef task() -> None: ...\n"
    )
    status, findings, summary = check(capsys, "--app", app)
    assert findings == {
        "configuration": "ok valid; the defaults",
        "task __main__.in_main": (
            "PROBLEM defined in __main__, which a worker cannot import; move it to a module"
        ),
        f"task {app}.make.<locals>.closure": (
            "PROBLEM defined inside a function, which a worker cannot import by name; "
            "move it to module level"
        ),
        f"task {app}.rebound": (
            f"PROBLEM a new process that imports {app} finds no such function at {app}.rebound"
        ),
        "task shop.renamed": (
            f"PROBLEM a new process that imports {helpers} knows no task named shop.renamed"
        ),
        "task vendored.task": (
            "PROBLEM importing vendored in a new process fails: "
            "ModuleNotFoundError: No module named 'vendored'"
        ),
    }
    assert (status, summary) == (1, "5 problem(s) found")


def test_check_an_application_without_tasks_gets_a_note(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str]
) -> None:
    status, findings, summary = check(capsys, "--app", write_app(app="app = 1\n"))
    assert findings["tasks"] == "note no @jumpqueue.task is declared by the application"
    assert (status, summary) == (0, "no problem found")


def test_check_an_application_that_cannot_load_is_a_usage_error(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write_app(app="app = 1\n")
    assert main(["check", "--app", f"{app}:missing"]) == 2
    assert f"cannot load the application {app}:missing: AttributeError" in capsys.readouterr().err
    assert main(["check", "--app", "no_such_module_here"]) == 2
    assert "ModuleNotFoundError" in capsys.readouterr().err


def test_check_a_configuration_the_application_gets_wrong_is_a_problem(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write_app(app="import jumpqueue\n\njumpqueue.configure(max_workers=0)\n")
    status, findings, summary = check(capsys, "--app", app)
    assert findings == {"configuration": "PROBLEM max_workers must be >= 1, not 0"}
    assert (status, summary) == (1, "1 problem(s) found")


def test_check_a_journal_is_opened_and_written_and_a_bad_one_left_as_it_is(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    journal = tmp_path / "jumpqueue.db"
    app = write_app(app=f"import jumpqueue\n\njumpqueue.configure(journal={str(journal)!r})\n")
    status, findings, _ = check(capsys, "--app", app)
    assert findings[f"journal {journal}"] == "ok created and written"
    assert status == 0
    status, findings, _ = check(capsys, "--app", app)
    assert findings[f"journal {journal}"] == "ok opened and written"

    journal.write_bytes(b"not a database at all" * 100)
    status, findings, _ = check(capsys, "--app", app)
    assert findings[f"journal {journal}"].startswith(
        f"PROBLEM {journal} is not a jumpqueue journal"
    )
    assert status == 1
    assert journal.read_bytes().startswith(b"not a database")  # not moved aside by a check

    (tmp_path / "a-file").write_text("")
    nowhere = tmp_path / "a-file" / "jumpqueue.db"  # under a file: no directory can be made
    app = write_app(app=f"import jumpqueue\n\njumpqueue.configure(journal={str(nowhere)!r})\n")
    status, findings, _ = check(capsys, "--app", app)
    assert findings[f"journal {nowhere}"].startswith("PROBLEM cannot be opened: FileExistsError")
    assert status == 1


def test_check_a_backend_url_that_is_none_is_a_problem(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write_app(app="app = 1\n")
    status, findings, _ = check(capsys, "--app", app, "--backend", "redis://x")
    assert findings["backend"].startswith("PROBLEM backend must be a URL such as")
    assert status == 1


def test_check_an_unreachable_broker_is_a_problem_found_within_the_handoff_timeout(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write_app(app="import jumpqueue\n\njumpqueue.configure(handoff_timeout=1.0)\n")
    url = f"rq+redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    status, findings, _ = check(capsys, "--app", app, "--backend", url)
    assert time.monotonic() - started < 10  # the new process's imports included
    assert findings[f"backend {url}"].startswith("PROBLEM unreachable: ConnectionError")
    assert findings["check_handoff"].startswith("note off: turn it on in development and tests")
    assert status == 1


def test_check_a_broker_that_does_not_answer_in_time_is_a_problem(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from jumpqueue.backends._handoff import HandOffExecutor

    answer = threading.Event()
    monkeypatch.setattr(HandOffExecutor, "ping", lambda self: answer.wait(10))
    app = write_app(app="import jumpqueue\n\njumpqueue.configure(handoff_timeout=0.2)\n")
    url = "rq+redis://127.0.0.1:6379/15"
    status, findings, _ = check(capsys, "--app", app, "--backend", url)
    answer.set()
    assert findings[f"backend {url}"] == "PROBLEM the broker did not answer within 0.2 s"
    assert status == 1


def test_check_a_backend_without_ping_gets_a_note(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str]
) -> None:
    app = write_app(
        app="""
        import jumpqueue
        from jumpqueue.executors.thread import ThreadExecutor

        class Homemade:
            name = "homemade"

            def __repr__(self):
                return "<Homemade>"

            def open(self, config, host):
                return ThreadExecutor(config, host)

        jumpqueue.configure(backend=Homemade())
        """
    )
    status, findings, _ = check(capsys, "--app", app)
    assert findings["backend <Homemade>"] == "note not checked: it offers no ping()"
    assert status == 0


def test_check_a_reachable_redis_for_rq_and_a_flask_application_factory_gets_a_note(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str]
) -> None:
    require(6379, "Redis")
    app = write_app(
        app=f"""
        import flask
        import jumpqueue
        from jumpqueue.contrib.flask import JumpQueue

        def create_app():
            app = flask.Flask(__name__)
            app.config["JUMPQUEUE_BACKEND"] = "rq+{REDIS_URL}"
            JumpQueue(app)
            return app
        """
    )
    status, findings, _ = check(capsys, "--app", f"{app}:create_app()")
    assert findings["configuration"] == f"ok valid; backend=rq+{REDIS_URL}"
    assert findings[f"backend rq+{REDIS_URL}"].startswith("ok the broker answered in ")
    assert findings["workers (Flask)"] == (
        "note a worker must run each task inside an application context of the app "
        "(docs/migration.md)"
    )
    assert status == 0


def test_check_a_reachable_rabbitmq_for_celery_given_on_the_command_line(
    write_app: WriteApp, capsys: pytest.CaptureFixture[str]
) -> None:
    require(5672, "RabbitMQ")
    app = write_app(app="import jumpqueue\n\njumpqueue.configure(check_handoff=True)\n")
    status, findings, _ = check(capsys, "--app", app, "--backend", f"celery+{RABBITMQ_URL}")
    shown = RABBITMQ_URL.replace(":guest@", ":***@")
    assert findings[f"backend celery+{shown}"].startswith("ok the broker answered in ")
    assert "check_handoff" not in findings  # on already
    assert status == 0


def run_command(app: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """`jumpqueue check --app APP` as a user runs it, in the project's directory."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("JUMPQUEUE_", "DJANGO_"))
    }
    return subprocess.run(
        [str(BIN / "jumpqueue"), "check", "--app", app],
        cwd=REPO,
        env={**inherited, **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_as_a_command_reads_the_environment_and_sets_django_up_as_a_worker_would(
    tmp_path: Path,
) -> None:
    require(6379, "Redis")
    app = "tests.backends.startup.django_app"
    environment = {
        "JUMPQUEUE_BACKEND": f"rq+{REDIS_URL}",
        "JUMPQUEUE_JOURNAL": str(tmp_path / "jumpqueue.db"),
    }
    done = run_command(app, **environment)
    assert done.returncode == 0, done.stdout + done.stderr
    findings, summary = parse(done.stdout)
    journal = tmp_path / "jumpqueue.db"
    assert findings["configuration"] == (
        f"ok valid; max_workers=4, backend=rq+{REDIS_URL}, journal={journal}"
    )
    # Its module imports Django's models: found once Django is set up, as in a worker.
    assert findings["task tests.backends.startup.tasks.greet"] == (
        "ok found by its name in a new process"
    )
    assert findings[f"backend rq+{REDIS_URL}"].startswith("ok the broker answered in ")
    assert findings["workers (Django)"] == (
        "note a worker must set DJANGO_SETTINGS_MODULE=tests.backends.startup.django_settings "
        "and call django.setup() before it runs a task (docs/migration.md)"
    )
    assert findings[f"journal {journal}"] == "ok created and written"
    assert summary == "no problem found"

    done = run_command(app, **environment, JUMPQUEUE_MAX_PENDING="lots")
    assert done.returncode == 1
    assert parse(done.stdout) == (
        {
            "configuration": "PROBLEM settings.JUMPQUEUE: JUMPQUEUE_MAX_PENDING='lots' is not "
            "a valid int"
        },
        "1 problem(s) found",
    )


def test_check_as_a_command_reports_an_environment_no_runtime_can_be_made_of() -> None:
    done = run_command(
        "json", JUMPQUEUE_MAX_PENDING="lots"
    )  # an application that configures nothing
    assert done.returncode == 1
    assert parse(done.stdout) == (
        {
            "configuration": "PROBLEM JUMPQUEUE_MAX_PENDING='lots' is not a valid int",
            "tasks": "note no @jumpqueue.task is declared by the application",
        },
        "1 problem(s) found",
    )


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "echo 'ImportError: something at start-up' >&2; exit 1",
            "failed before it could look the task up: ImportError: something at start-up",
        ),
        ("exec sleep 10", "did not import it within 0.5 s"),
    ],
)
def test_check_a_new_process_that_fails_or_hangs_is_a_problem(  # noqa: PLR0917 -- fixtures
    write_app: WriteApp,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    script: str,
    expected: str,
) -> None:
    from jumpqueue import _check_cli

    app = write_app(app=GOOD_APP)
    interpreter = tmp_path / "interpreter"
    interpreter.write_text(f"#!/bin/sh\n{script}\n")
    interpreter.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    monkeypatch.setattr(_check_cli, "IMPORT_LIMIT", 0.5)
    status, findings, _ = check(capsys, "--app", app)
    assert findings[f"task {app}.send_receipt"] == f"PROBLEM a new process {expected}"
    assert status == 1
