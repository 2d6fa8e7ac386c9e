"""An application's own TestClient suite passes in any order (tests/web/user_suite).

Each order runs in a fresh pytest process, without this project's conftest
(whose autouse fixture gives every test a fresh default runtime, as a user's
suite does not): forwards, backwards, and shuffled with fixed seeds, so that a
failure names an order that can be run again.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from .user_suite import suite_testclient

SUITE = Path(suite_testclient.__file__).resolve()
REPO = SUITE.parents[3]
TESTS = sorted(name for name in vars(suite_testclient) if name.startswith("test_"))


def orders() -> list[list[str]]:
    shuffled = [random.Random(seed).sample(TESTS, len(TESTS)) for seed in (1, 2)]
    return [TESTS, TESTS[::-1], *shuffled]


@pytest.mark.parametrize("order", orders(), ids=["forwards", "backwards", "seed1", "seed2"])
def test_user_suite_with_starlette_test_client_passes_in_any_order(order: list[str]) -> None:
    node_ids = [f"{SUITE.relative_to(REPO)}::{name}" for name in order]
    # Hypothesis's plugin (which this suite does not use) takes a second to import.
    pytest_command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    pytest_command += ["-p", "no:hypothesispytest"]
    finished = subprocess.run(
        [*pytest_command, "--confcutdir", str(SUITE.parent), *node_ids],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, f"in the order {order}:\n{finished.stdout}{finished.stderr}"
    assert f"{len(TESTS)} passed" in finished.stdout
