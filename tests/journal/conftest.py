"""Fixtures of the journal tests: journals in tmp_path, and runtimes that always shut down."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jumpqueue import Runtime

from ..conftest import RuntimeFactory
from .journal_helpers import RECORDER

JournaledFactory = Callable[..., Runtime]


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    RECORDER.reset()


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def make_journaled(journal_path: Path, make_runtime: RuntimeFactory) -> JournaledFactory:
    """Runtimes with a journal (by default at `journal_path`), shut down after the test."""

    def make(**options: Any) -> Runtime:
        options.setdefault("journal", str(journal_path))
        return make_runtime(**options)

    return make
