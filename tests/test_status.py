"""The status report in process: snapshots summed across workers, formats, access, the collector."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

import jumpqueue
from jumpqueue import Config, ConfigurationError
from jumpqueue._journal.owner import Owner, start_time, this_node
from jumpqueue._runtime import reporting
from jumpqueue._snapshots import EXITED, path_for, write
from jumpqueue.status import StatusPage

from .conftest import RuntimeFactory, eventually

pytestmark = pytest.mark.usefixtures("status_pages")


@jumpqueue.task
def pause(seconds: float) -> None:
    time.sleep(seconds)


def _snapshot(
    pid: int, owner: Owner, written: float, submitted: int, pending: int
) -> dict[str, Any]:
    return {
        "version": 1,
        "pid": pid,
        "owner": str(owner),
        "started": written - 100,
        "written": written,
        "interval": 1.0,
        "counters": {"submitted": submitted, "succeeded": submitted - pending, "shed": {"drop": 1}},
        "gauges": {"held": 0, "pending": pending, "running": 0, "workers": 2, "stuck_threads": 1},
    }


def test_status_report_sums_workers_and_shows_dead_and_stale_ones_never_as_zeros(
    make_runtime: RuntimeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "status"
    directory.mkdir()
    runtime = make_runtime(status_dir=str(directory))
    runtime.submit(pause, 0.000123).result(timeout=5)  # an argument the page must not show
    now, parent = time.time(), os.getppid()
    # Its pid lives, but it started at another time: a reused pid, so the worker is dead.
    dead = _snapshot(999_991, Owner(parent, this_node(), "1"), now - 1, submitted=7, pending=4)
    stale = Owner(parent, this_node(), start_time(parent))
    unresponsive = _snapshot(parent, stale, now - 60, submitted=5, pending=3)
    write(path_for(str(directory), 999_991), dead)
    write(path_for(str(directory), parent), unresponsive)

    page = StatusPage(runtime=runtime)
    report = json.loads(page.respond("127.0.0.1", None, "json&full")[2])
    assert report["server_workers"] == {"alive": 1, "unresponsive": 1, "dead": 1}
    assert report["accepted"] == 1 + 7 + 5  # counters: every worker, the dead too
    assert report["pending"] == 3  # gauges: live workers only
    assert report["stuck_threads"] == 1
    assert report["counters"]["shed"] == {"drop": 2}
    rows = {row["pid"]: row for row in report["processes"]}
    assert rows[999_991]["state"] == "dead"
    assert rows[999_991]["accepted"] == 7  # what it last said, not zeros
    assert rows[parent]["state"] == "unresponsive"
    assert rows[os.getpid()]["state"] == "alive"

    status, headers, text = page.respond("::1", None, "full")
    assert status == 200
    assert dict(headers)["content-type"].startswith("text/plain")
    assert "accepted calls:       13" in text.decode()
    assert "state:                dead" in text.decode()
    assert "pid:" in page.respond("127.0.0.1", None, "")[2].decode()
    assert "state:" not in page.respond("127.0.0.1", None, "")[2].decode()
    metrics = page.respond("127.0.0.1", None, "openmetrics")[2].decode()
    assert "jumpqueue_submitted_total 13\n" in metrics
    assert 'jumpqueue_worker_up{pid="999991"} 0\n' in metrics
    assert 'jumpqueue_worker_pending{pid="999991"}' not in metrics
    assert metrics.endswith("# EOF\n")
    for query in ("full", "json&full", "openmetrics", "html"):
        assert b"0.000123" not in page.respond("127.0.0.1", None, query)[2]

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from jumpqueue.prometheus import JumpQueueCollector

    registry = CollectorRegistry()
    idle = make_runtime(status_dir=str(tmp_path / "idle"))
    idle_collector = JumpQueueCollector(idle)
    registry.register(idle_collector)
    assert not idle._reporter.started  # registering reads nothing, starts nothing
    registry.unregister(idle_collector)
    registry.register(JumpQueueCollector(runtime))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    assert samples["jumpqueue_submitted_total", ()] == 13
    assert samples["jumpqueue_pending", ()] == 3
    assert samples["jumpqueue_worker_pending", (("pid", str(parent)),)] == 3
    assert samples["jumpqueue_shed_total", (("policy", "drop"),)] == 2
    assert samples["jumpqueue_calls_total", (("outcome", "succeeded"), ("task", pause.name))] == 1
    assert samples["jumpqueue_run_seconds_count", (("task", pause.name),)] == 1

    # Long dead: folded into exited.json, and the sums stay as they were.
    monkeypatch.setattr(reporting, "FORGET_AFTER", 0.0)
    leftover = directory / "worker-999992.json.999992.tmp"  # its writer died mid-write
    leftover.write_text("{")
    os.utime(leftover, (now - 10, now - 10))
    runtime._reporter._fold_forgotten(str(directory))
    assert not leftover.exists()
    assert not Path(path_for(str(directory), 999_991)).exists()
    report = json.loads(page.respond("127.0.0.1", None, "json")[2])
    assert report["accepted"] == 13
    assert report["server_workers"]["dead"] == 0
    # A runtime that shuts down folds its own counters in too.
    runtime.shutdown()
    assert not Path(path_for(str(directory), os.getpid())).exists()
    exited = json.loads((directory / EXITED).read_text())["counters"]
    assert exited["submitted"] == 8


def test_status_reporter_writes_its_snapshot_with_per_task_metrics_and_stops_observing(
    make_runtime: RuntimeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jumpqueue import _observe

    directory = tmp_path / "status"
    monkeypatch.setattr(reporting, "INTERVAL", 0.05)
    runtime = make_runtime(
        status_dir=str(directory),
        max_workers=1,
        slow_call_threshold=0.005,
        journal=str(tmp_path / "journal.db"),
    )
    path = Path(path_for(str(directory), os.getpid()))
    assert not path.exists()  # nothing is written before the runtime serves
    runtime.submit(pause, 0).result(timeout=5)  # its first executor starts the writing
    handles = [runtime.submit(pause, 0.01) for _ in range(3)]
    for handle in handles:
        handle.result(timeout=5)

    def written() -> dict[str, Any]:
        return json.loads(path.read_text()) if path.exists() else {}

    eventually(lambda: written().get("counters", {}).get("succeeded") == 4, "4 calls in the file")
    snapshot = written()
    assert oct(directory.stat().st_mode & 0o777) == oct(0o700)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    task = snapshot["counters"]["tasks"][pause.name]
    assert task["outcomes"] == {"succeeded": 4}
    assert task["run"]["count"] == 4
    assert task["run"]["sum"] >= 0.03
    assert task["wait"]["count"] == 4
    assert snapshot["gauges"]["max_in_flight"] >= 1
    assert snapshot["counters"]["slow"] == 3  # the three that slept past 5 ms
    assert runtime._reporter.tasks in _observe.observers
    page = StatusPage(runtime=runtime)

    def report() -> dict[str, Any]:
        return dict(json.loads(page.respond("127.0.0.1", None, "json")[2]))

    # A call's result is ready before the journal's next group commit marks it done.
    eventually(lambda: report()["journal_backlog"] == 0, "every journaled call marked done")
    assert report()["slow_calls"] == 3
    runtime.shutdown()
    assert runtime._reporter.tasks not in _observe.observers


def test_status_page_counts_scheduled_calls_apart_from_pending_ones(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    handle = runtime.defer(pause.options(delay=3600), 0)
    page = StatusPage(runtime=runtime)
    report = json.loads(page.respond("127.0.0.1", None, "json&full")[2])
    assert (report["scheduled"], report["pending"]) == (1, 0)
    assert report["processes"][0]["scheduled"] == 1
    assert b"jumpqueue_scheduled 1" in page.respond("127.0.0.1", None, "openmetrics")[2]
    assert b"scheduled calls:" in page.respond("127.0.0.1", None, "")[2]
    runtime.shutdown()
    assert handle.status is jumpqueue.Status.ABANDONED  # no journal: nothing keeps it


def test_status_page_serves_loopback_only_or_whoever_has_the_token() -> None:
    page = StatusPage()
    assert page.respond("127.0.0.1", None, "")[0] == 200
    assert page.respond("::1", None, "")[0] == 200
    assert page.respond("10.1.2.3", None, "")[0] == 403
    assert page.respond(None, None, "")[0] == 403
    assert page.respond("testclient", None, "")[0] == 403
    locked = StatusPage(token="s3cret")  # noqa: S106
    assert locked.respond("10.1.2.3", "Bearer s3cret", "json")[0] == 200
    assert locked.respond("10.1.2.3", None, "token=s3cret&json")[0] == 200
    assert locked.respond("127.0.0.1", None, "")[0] == 403
    assert locked.respond("127.0.0.1", "Bearer wrong", "token=s3cret")[0] == 403
    _, headers, body = page.respond("127.0.0.1", None, "html")
    assert dict(headers)["content-type"].startswith("text/html")
    assert b"<svg" in body
    assert b"http" not in body.replace(b"http.", b"")  # nothing from a CDN
    with pytest.raises(ValueError, match="token"):
        StatusPage(token="")


def test_status_dir_config_option_is_checked_and_read_from_the_environment(
    tmp_path: Path,
) -> None:
    assert Config.from_env({"JUMPQUEUE_STATUS_DIR": str(tmp_path)}).status_dir == str(tmp_path)
    assert Config.from_env({"JUMPQUEUE_STATUS_DIR": ""}).status_dir is None
    assert Config(status_dir=tmp_path).status_dir == str(tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="status_dir"):
        Config(status_dir="  ")


def test_status_route_and_add_status_page_serve_the_page_in_their_frameworks() -> None:
    import asyncio

    import httpx
    from flask import Flask
    from starlette.applications import Starlette

    from jumpqueue.contrib.flask import add_status_page
    from jumpqueue.contrib.starlette import status_route

    async def ask(app: Starlette) -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            refused = await client.get("/jumpqueue/status?json")
            given = await client.get(
                "/jumpqueue/status?json", headers={"Authorization": "Bearer t"}
            )
        assert given.json()["accepted"] >= 0
        return refused.status_code, given.status_code

    app = Starlette(routes=[status_route(token="t")])  # noqa: S106
    assert asyncio.run(ask(app)) == (403, 200)

    async def plain(page: StatusPage) -> httpx.Response:  # the page as a bare ASGI app
        transport = httpx.ASGITransport(app=page.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/?openmetrics")

    assert asyncio.run(plain(StatusPage())).text.endswith("# EOF\n")
    answers: list[str] = []
    body = StatusPage().wsgi(
        {"REMOTE_ADDR": "10.0.0.1", "QUERY_STRING": "json"},
        lambda status, headers: answers.append(status),
    )
    assert (answers, b"".join(body)) == (["403 Forbidden"], b"forbidden\n")
    flask_app = Flask(__name__)
    add_status_page(flask_app, "/status")
    response = flask_app.test_client().get("/status?openmetrics")
    assert response.status_code == 200
    assert response.text.endswith("# EOF\n")
    assert "this process only" in flask_app.test_client().get("/status").text


def test_top_says_why_it_cannot_read_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    from jumpqueue.cli import main

    assert main(["top", "http://127.0.0.1:9/jumpqueue/status", "--once"]) == 1
    assert "cannot read http://127.0.0.1:9/jumpqueue/status" in capsys.readouterr().err
    assert main(["top", "http://127.0.0.1:9/", "--interval", "0"]) == 2
    with pytest.raises(SystemExit, match="http"):
        main(["top", "ftp://127.0.0.1/", "--once"])
