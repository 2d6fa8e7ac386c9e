"""The status page and the Prometheus collector on a real gunicorn with three workers."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jumpqueue.cli import main

from ..conftest import eventually
from .harness import PY, Coordinator, RunningServer, ServerSpec, running

pytest.importorskip("gunicorn")
pytest.importorskip("prometheus_client")

#: Requests sent to /work, by the pid of the worker that answered (each defers one call).
SENT: collections.Counter[int] = collections.Counter()
PAGE = "/jumpqueue/status"


def _gunicorn_three_workers(port: int) -> list[str]:
    return [
        *(PY, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "3"),
        *("--worker-class", "gthread", "--threads", "4", "--graceful-timeout", "5"),
        *("--config", "python:jumpqueue.contrib.gunicorn", "tests.web.apps.status_app:app"),
    ]


@pytest.fixture(scope="module")
def server(
    coordinator: Coordinator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """gunicorn, three workers, writing their snapshots to one status directory."""
    spec = ServerSpec("gunicorn-3-workers", _gunicorn_three_workers, "flask", ("gunicorn",))
    root = tmp_path_factory.mktemp("status")
    with running(spec, coordinator, root, JUMPQUEUE_STATUS_DIR=str(root / "status")) as started:
        yield started


def _load(server: RunningServer, count: int) -> None:
    # One client (making one per request costs more than the request), a connection each.
    with httpx.Client(base_url=server.url, headers={"Connection": "close"}, timeout=10) as client:

        def one(_: int) -> int:
            response = client.get("/work")
            response.raise_for_status()
            return int(response.text)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            SENT.update(pool.map(one, range(count)))


def _spread(server: RunningServer) -> None:
    # Until every worker has served some: the kernel hands connections to whichever accepts.
    for _ in range(20):
        if len(SENT) >= 3:
            return
        _load(server, 30)
    raise AssertionError(f"the load reached only the workers {sorted(SENT)}")


def _report(server: RunningServer) -> dict[str, Any]:
    response = server.get(f"{PAGE}?json&full")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _wait_report(
    server: RunningServer, accept: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> dict[str, Any]:

    def matching() -> dict[str, Any] | None:
        report = _report(server)
        return report if accept(report) else None

    # The workers write their snapshots once a second: nothing there signals the test.
    return eventually(matching, "the status page matching", timeout)


def _settled(report: dict[str, Any]) -> bool:
    total = sum(SENT.values())
    return bool(
        report["accepted"] == total
        and report["counters"]["succeeded"] == total
        and report["server_workers"]["alive"] >= 3
    )


def _browser(profile: Path) -> Any:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium and chromium-driver are missing (apt-get install them)")
        pytest.skip("chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(driver))


def test_status_page_html_in_a_browser_matches_the_json_and_updates_under_load(
    server: RunningServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    browser = _browser(tmp_path / "profile")
    try:
        _spread(server)
        _wait_report(server, _settled)
        browser.get(f"{server.url}{PAGE}?html")

        def polls(_: object = None) -> int:
            return int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-polls"))

        def shown() -> dict[str, str]:
            spans = browser.find_elements(By.CSS_SELECTOR, "[data-key]")
            return {span.get_attribute("data-key"): span.text for span in spans}

        WebDriverWait(browser, 15).until(lambda _: polls() >= 1)
        keys = ["accepted", "held", "pending", "counters.succeeded", "counters.failed"]
        keys += ["server_workers.alive", "backlog_full", "pending_limit"]

        def matches(_: object) -> bool:
            report, page = _report(server), shown()
            return all(page[key] == str(_value(report, key)) for key in keys)

        WebDriverWait(browser, 15).until(matches, f"the page never showed the JSON: {shown()}")
        assert shown()["accepted"] == str(sum(SENT.values()))
        rows = browser.find_elements(By.CSS_SELECTOR, "#workers tr")
        assert len(rows) >= 3

        before, first = polls(), int(shown()["accepted"])
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            loading = pool.submit(_load, server, 60)
            WebDriverWait(browser, 15).until(
                lambda _: polls() > before and int(shown()["accepted"]) > first
            )
            loading.result(timeout=30)
        lines = browser.find_elements(By.CSS_SELECTOR, "#throughput polyline")
        assert lines
        assert lines[0].get_attribute("points")
    finally:
        browser.quit()


def _value(report: dict[str, Any], key: str) -> object:
    value: Any = report
    for part in key.split("."):
        value = value[part]
    return value


def _scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = server.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_status_of_three_gunicorn_workers_sums_in_one_scrape_and_shows_a_killed_one_as_dead(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _spread(server)
    _load(server, 60)
    report = _wait_report(server, _settled)
    total = sum(SENT.values())
    rows = {row["pid"]: row for row in report["processes"]}
    for pid, count in SENT.items():
        assert rows[pid]["accepted"] == count

    # Every call had ended when that report was made; each worker's file is up to a
    # second behind it: once all are newer, whichever worker answers sums them exactly.
    ended = report["time"]
    _wait_report(server, lambda r: all(r["time"] - w["last_seen"] > ended for w in r["processes"]))
    samples = _scrape(server)  # one scrape, of whichever worker answers
    task = ("task", "tests.web.apps.status_app.work")
    assert samples["jumpqueue_submitted_total", ()] == total
    succeeded = [
        value
        for (name, labels), value in samples.items()
        if name == "jumpqueue_calls_total" and ("outcome", "succeeded") in labels
    ]
    assert sum(succeeded) == total
    assert samples["jumpqueue_run_seconds_count", (task,)] == total
    assert samples["jumpqueue_wait_seconds_count", (task,)] == total
    assert samples["jumpqueue_calls_total", (("outcome", "succeeded"), task)] == total
    up = {labels[0][1] for (name, labels), v in samples.items() if name == "jumpqueue_worker_up"}
    assert {str(pid) for pid in SENT} <= up
    assert samples["jumpqueue_pending", ()] == 0

    assert main(["top", f"{server.url}{PAGE}", "--once"]) == 0
    view = capsys.readouterr().out
    assert f"calls: {total} accepted" in view
    assert view.count(" alive") >= 3

    victim = max(SENT, key=lambda pid: SENT[pid])
    os.kill(victim, signal.SIGKILL)
    report = _wait_report(
        server,
        lambda r: any(row["pid"] == victim and row["state"] == "dead" for row in r["processes"]),
    )
    row = next(row for row in report["processes"] if row["pid"] == victim)
    assert row["accepted"] == SENT[victim]  # what it did, not zeros
    assert report["accepted"] == total  # its counts stay in the sum
    assert report["server_workers"]["dead"] == 1
    assert main(["top", f"{server.url}{PAGE}", "--once"]) == 0
    assert f"{victim:>8}         dead" in capsys.readouterr().out
    assert json.loads(server.get(f"{PAGE}?json").text)["accepted"] == total
