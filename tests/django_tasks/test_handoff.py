"""Moving to RQ by settings alone: the same Django task, handed off by jumpqueue, run by RQ."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from tests.backends.conftest import BIN, REDIS_URL, REPO, require

pytest.importorskip("django.tasks", reason="django.tasks needs Django 6 (Python 3.12+)")
pytest.importorskip("rq")

ENQUEUE = """
import os
import django
django.setup()
import jumpqueue
from tests.django_tasks import tasks
result = tasks.write.enqueue({path!r}, "handed off")
jumpqueue.shutdown(10)  # the hand-off is done once this returns
print(result.id, tasks.write.get_result(result.id).status, os.getpid())
"""


def test_handoff_a_django_task_goes_to_rq_and_runs_in_its_worker(tmp_path: Path) -> None:
    require(6379, "Redis")
    written = tmp_path / "written.txt"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "tests.django_tasks.rq_site",
        "JQTEST_REDIS_URL": REDIS_URL,
        "JQTEST_QUEUE": f"jumpqueue-test-{uuid.uuid4().hex[:12]}",
    }
    web = subprocess.run(
        [sys.executable, "-c", ENQUEUE.format(path=str(written))],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert web.returncode == 0, web.stderr
    call_id, status, pid = web.stdout.split()
    assert status == "READY"  # handed off: its outcome lives in RQ
    worker = subprocess.Popen(
        [
            *(str(BIN / "rq"), "worker", "--burst", "--url", REDIS_URL),
            *("--worker-class", "tests.django_tasks.rq_worker.DjangoWorker", env["JQTEST_QUEUE"]),
        ],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stdout = worker.stdout
    assert stdout is not None
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in stdout:
            lines.append(line)
            if "done, quitting" in line:  # its queue is empty: --burst ends here
                done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ended = done.wait(20)
    finally:
        worker.kill()  # RQ's own exit may hang on its pub/sub thread: its work is done
        worker.wait(10)
        reader.join(10)
        stdout.close()
    output = "".join(lines)
    assert ended, output
    assert f"Job OK ({call_id})" in output, output
    text, _, writer = written.read_text().partition(" by ")
    assert text == "handed off"
    assert writer != pid
