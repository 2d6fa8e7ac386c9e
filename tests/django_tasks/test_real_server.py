"""The backend under gunicorn (two workers) and uvicorn, one journal: results read elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually
from tests.web.harness import PY, Coordinator, RunningServer, ServerSpec, running

pytest.importorskip("django.tasks", reason="django.tasks needs Django 6 (Python 3.12+)")

GUNICORN = ServerSpec(
    "gunicorn-2-workers",
    lambda port: [
        *(PY, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2"),
        *("--config", "python:jumpqueue.contrib.gunicorn", "tests.django_tasks.wsgi:application"),
    ],
    "django",
    ("gunicorn", "django"),
)


@pytest.fixture(scope="module")
def coordinator() -> Iterator[Coordinator]:
    """What the tasks of the server report to (see tests/web/harness.py)."""
    hub = Coordinator()
    yield hub
    hub.close()


UVICORN = ServerSpec(
    "uvicorn",
    lambda port: [
        *(PY, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)),
        *("--lifespan", "off", "--log-level", "warning", "tests.django_tasks.asgi:application"),
    ],
    "django",
    ("uvicorn", "django"),
)


def read_by(server: RunningServer, call_id: str, pid: int, *, same: bool = False) -> dict[str, Any]:
    """The final result of `call_id` as a worker reads it: not `pid`, or `pid` if `same`."""

    def read() -> dict[str, Any] | None:
        body: dict[str, Any] = server.get(f"/result?id={call_id}").json()
        final = body.get("status") in {"SUCCESSFUL", "FAILED"}
        return body if (body["pid"] == pid) is same and final else None

    # Another process's journal, and the kernel's choice of worker: nothing signals the test.
    return eventually(read, f"a worker (same as {pid}: {same}) reading {call_id}")


def test_real_server_results_are_read_by_another_worker_process(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    missing = GUNICORN.missing() or UVICORN.missing()
    if missing is not None:
        pytest.skip(f"{missing} is not installed")
    environment = {
        "DJANGO_SETTINGS_MODULE": "tests.django_tasks.site",
        "JUMPQUEUE_JOURNAL": str(tmp_path / "journal.db"),
    }
    with (
        running(GUNICORN, coordinator, tmp_path, **environment) as server,
        running(UVICORN, coordinator, tmp_path, **environment) as asgi,
    ):
        enqueued = server.get("/enqueue?tag=ok").json()
        coordinator.wait_for("ran ok")
        done = read_by(server, enqueued["id"], enqueued["pid"])
        assert done["status"] == "SUCCESSFUL"
        assert done["return_value"] == {"tag": "ok", "pid": enqueued["pid"]}
        assert [worker.rpartition(":")[2] for worker in done["worker_ids"]] == [
            str(enqueued["pid"])
        ]
        assert "None" not in done["times"]

        failed = server.get("/enqueue?tag=skipped&fail=1")
        assert failed.status_code == 500
        # A failed request's tasks never reach the journal: its worker alone knows them.
        skipped = read_by(server, failed.json()["id"], failed.json()["pid"], same=True)
        assert skipped["status"] == "FAILED"
        assert skipped["errors"][-1].endswith("TaskNotRunError")
        # Under ASGI, from a coroutine view; read by a gunicorn worker.
        aenqueued = asgi.get("/aenqueue?tag=asgi").json()
        coordinator.wait_for("ran asgi")
        adone = read_by(server, aenqueued["id"], aenqueued["pid"])
        assert adone["return_value"] == {"tag": "asgi", "pid": aenqueued["pid"]}
    assert not coordinator.seen("ran skipped")
