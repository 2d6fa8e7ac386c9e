"""The recipes of docs/testing.md: each example's own suite passes, and the page quotes them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "testing"
PAGE = ROOT / "docs" / "testing.md"

PYTEST = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q")
# Each example's command, and how many tests its suite has.
RECIPES = {
    "pytest": (PYTEST, 5),
    "flask": (PYTEST, 3),
    "fastapi": (PYTEST, 4),
    "django": ((sys.executable, "manage.py", "test"), 3),
}
# The project's pytest timeout is 30 s per test: a suite that hangs fails before it.
SUITE_TIMEOUT = 25


def _run_suite(example: str) -> tuple[int, str]:
    command, _ = RECIPES[example]
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DJANGO_SETTINGS_MODULE", "PYTEST_ADDOPTS", "PYTEST_PLUGINS"}
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the examples' folders as they are
    # Plugins of this project's test tools that the examples do not use: each takes a
    # second to import.
    env["PYTEST_ADDOPTS"] = "-p no:faker -p no:hypothesispytest"
    completed = subprocess.run(
        command,
        cwd=EXAMPLES / example,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
        check=False,
    )
    return completed.returncode, completed.stdout + completed.stderr


@pytest.mark.parametrize("example", ["pytest", "flask", "fastapi"])
def test_recipes_pytest_suite_passes(example: str) -> None:
    returncode, output = _run_suite(example)
    assert returncode == 0, output
    summary = re.search(r"^(\d+) passed\b(.*) in [\d.]+s", output, re.MULTILINE)
    assert summary is not None, output
    assert int(summary[1]) == RECIPES[example][1], output
    assert not re.search(r"\b(failed|error|skipped|xfailed|xpassed)\b", summary[2]), output


def test_recipes_django_suite_passes() -> None:
    returncode, output = _run_suite("django")
    assert returncode == 0, output
    ran = re.search(r"^Ran (\d+) tests? in [\d.]+s\n\nOK$", output, re.MULTILINE)
    assert ran is not None, output
    assert int(ran[1]) == RECIPES["django"][1], output


def test_recipes_page_quotes_the_examples_as_they_are() -> None:
    # Each Python block on the page opens with `# <example>/<file>` and is a verbatim
    # excerpt of that file: the page cannot drift from the code that is tested.
    blocks = re.findall(r"^```python\n(.*?)^```$", PAGE.read_text(), re.MULTILINE | re.DOTALL)
    quoted = set()
    for block in blocks:
        first, _, excerpt = block.partition("\n")
        assert first.startswith("# "), f"a block on {PAGE.name} names no example file:\n{block}"
        path = EXAMPLES / first.removeprefix("# ")
        assert path.is_file(), f"{first}: no such example file"
        assert excerpt.strip() in path.read_text(), f"{PAGE.name} quotes {first} as it is not"
        quoted.add(path.parent.name)
    assert quoted == set(RECIPES)
