"""Stopping a real server while deferred calls run, as docs/servers.md says each one drains.

Where the server drains, the calls finish within `shutdown_timeout` and what
cannot is abandoned, counted and logged: the ASGI servers through the lifespan
protocol (uvicorn, hypercorn, granian, gunicorn's uvicorn worker), gunicorn
through the `worker_exit` hook of `jumpqueue.contrib.gunicorn` (its `--config`),
waitress through the SIGTERM snippet of the docs (`apps/waitress_app.py`), the
Werkzeug dev server at exit on Ctrl-C (SIGINT).

Where it cannot, the test says so: SIGTERM kills the Werkzeug dev server, and
waitress without the snippet, before anything drains.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import time
from pathlib import Path

import pytest

from .harness import PY, REPO, SERVERS, Coordinator, ServerSpec, running

SHUTDOWN_TIMEOUT = 1.0
#: How long a server may take to exit beyond `shutdown_timeout`.
EXIT_SLACK = 10.0


@dataclasses.dataclass(frozen=True)
class Stop:
    """How a case stops its server, and what the docs say happens to the running calls.

    Attributes:
        spec: the server.
        signum: the signal sent to its main process.
        drains: True if the calls get `shutdown_timeout` to finish (and the rest
            is abandoned and logged); False if the signal kills the process first.
    """

    spec: ServerSpec
    signum: signal.Signals
    drains: bool


#: waitress serving the plain WSGI application, without the docs' SIGTERM snippet.
WAITRESS_WITHOUT_SNIPPET = ServerSpec(
    "waitress-without-snippet",
    lambda port: [
        *(PY, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=4"),
        "tests.web.apps.wsgi_plain:app",
    ],
    "wsgi",
    ("waitress",),
)

CASES = {
    "uvicorn": Stop(SERVERS["uvicorn"], signal.SIGTERM, drains=True),
    "hypercorn": Stop(SERVERS["hypercorn"], signal.SIGTERM, drains=True),
    "granian": Stop(SERVERS["granian"], signal.SIGTERM, drains=True),
    "gunicorn-sync": Stop(SERVERS["gunicorn-sync"], signal.SIGTERM, drains=True),
    "gunicorn-gthread": Stop(SERVERS["gunicorn-gthread"], signal.SIGTERM, drains=True),
    "gunicorn-uvicorn": Stop(SERVERS["gunicorn-uvicorn"], signal.SIGTERM, drains=True),
    "waitress": Stop(SERVERS["waitress"], signal.SIGTERM, drains=True),
    "waitress-without-snippet": Stop(WAITRESS_WITHOUT_SNIPPET, signal.SIGTERM, drains=False),
    "werkzeug-SIGINT": Stop(SERVERS["werkzeug"], signal.SIGINT, drains=True),
    "werkzeug-SIGTERM": Stop(SERVERS["werkzeug"], signal.SIGTERM, drains=False),
}


def test_every_server_has_a_draining_case() -> None:
    stopped = {case.spec.name for case in CASES.values() if case.drains}
    assert stopped == set(SERVERS)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.timeout(60)
def test_real_server_stop_drains_running_calls(
    case: str, coordinator: Coordinator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stop = CASES[case]
    missing = stop.spec.missing()
    if missing is not None:
        pytest.skip(f"{missing} is not installed for this Python")
    environment = {"JUMPQUEUE_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT)}
    with running(stop.spec, coordinator, tmp_path_factory.mktemp(case), **environment) as server:
        finishing, hanging = f"{case}-stop-finishing", f"{case}-stop-hanging"
        for tag in (finishing, hanging):
            assert server.get(f"/ordering?tag={tag}").status_code == 200
            coordinator.wait_for(f"ready {tag}")  # both calls are running now

        server.terminate(stop.signum)
        stopped_at = time.monotonic()
        if not stop.drains:
            # Killed by the signal: no drain, nothing logged, and the running calls are lost.
            assert server.wait(EXIT_SLACK) == -stop.signum
            coordinator.allow(finishing)
            assert "jumpqueue: shutdown" not in server.log()
            assert not coordinator.seen(f"done {finishing}")
            assert not coordinator.seen(f"done {hanging}")
            return

        # One call may finish during the drain, the other never. The first is let go
        # only halfway through `shutdown_timeout`: a server that stopped its calls at
        # once, or gave them less time, fails here.
        time.sleep(SHUTDOWN_TIMEOUT / 2)
        coordinator.allow(finishing)
        coordinator.wait_for(f"done {finishing}")
        # uvicorn raises the signal again once it has shut down gracefully.
        assert server.wait(SHUTDOWN_TIMEOUT + EXIT_SLACK) in (0, -stop.signum)
        elapsed = time.monotonic() - stopped_at
        # The drain waited out `shutdown_timeout` for the hanging call, then the server exited.
        assert SHUTDOWN_TIMEOUT <= elapsed < SHUTDOWN_TIMEOUT + EXIT_SLACK

        log = server.log()
        # The hanging call, and it alone, abandoned, counted and named in the log. (A
        # server that sets up the root logger shows the same record a second time.)
        abandoned = re.findall(
            r"shutdown after (\S+) s abandoned (\d+) call\(s\): \S*block \[(\w+)\]", log
        )
        assert len(set(abandoned)) == 1, log
        assert abandoned[0][:2] == (f"{SHUTDOWN_TIMEOUT:.1f}", "1"), log
        assert not coordinator.seen(f"done {hanging}")


def test_waitress_app_uses_the_documented_snippet() -> None:
    """The waitress case proves the snippet the docs give, not a variant of it."""
    docs = (REPO / "docs" / "servers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", docs, re.DOTALL)
    snippets = [block for block in blocks if "signal.SIGTERM" in block]
    assert len(snippets) == 1, "docs/servers.md no longer gives one SIGTERM snippet"
    snippet = "".join(line.strip() + "\n" for line in snippets[0].splitlines())
    app = Path(__file__).parent / "apps" / "waitress_app.py"
    assert snippet.strip() in app.read_text(), snippet
