from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jumpqueue import Config, ConfigurationError, Runtime
from jumpqueue.integration import RequestScope

from .conftest import JournaledFactory
from .journal_helpers import remember, states


def test_journal_config_reads_the_environment_and_checks_its_fields(tmp_path: Path) -> None:
    config = Config.from_env(
        {
            "JUMPQUEUE_JOURNAL": str(tmp_path / "j.db"),
            "JUMPQUEUE_JOURNAL_SYNCHRONOUS": "normal",
            "JUMPQUEUE_ON_OVERLOAD": "spill",
            "JUMPQUEUE_JOURNAL_LEASE": "10",
        }
    )
    assert (config.journal, config.journal_synchronous) == (str(tmp_path / "j.db"), "NORMAL")
    assert (config.on_overload, config.journal_lease) == ("spill", 10.0)
    assert Config.from_env({"JUMPQUEUE_JOURNAL": ""}).journal is None
    assert Config(journal=tmp_path / "p.db").journal == str(tmp_path / "p.db")  # type: ignore[arg-type]
    for bad in (
        {"journal_synchronous": "OFF"},
        {"serializer": "marshal"},
        {"on_journal_error": "ignore"},
        {"journal_lease": 0.5},
        {"journal_retention": 0},
        {"journal": ""},
    ):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            Config(**bad)


def test_journal_without_one_configured_nothing_touches_the_disk(tmp_path: Path) -> None:
    runtime = Runtime(Config())
    assert not runtime.journaled
    assert not runtime.open_journal()
    scope = RequestScope()
    token = scope.activate()
    handle = runtime.defer(remember, 1)
    scope.deactivate(token)
    scope.seal()
    scope.release(succeeded=True)
    assert handle.result(5) == 1
    runtime.shutdown()
    stats = runtime.stats()
    assert (stats.journaled, stats.journal_fallbacks, stats.journal_degraded) == (0, 0, False)
    assert list(tmp_path.iterdir()) == []


def test_journal_aseal_commits_off_the_event_loop(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    runtime = make_journaled()
    assert runtime.journaled

    async def request() -> None:
        scope = RequestScope()
        token = scope.activate()
        runtime.defer(remember, "a")
        runtime.defer(remember, "b")
        scope.deactivate(token)
        await scope.aseal()
        assert states(journal_path) == {"claimed": 2}
        scope.release(succeeded=True)

    asyncio.run(request())


def test_journal_warns_once_about_an_sqlite_with_the_wal_reset_bug(
    make_journaled: JournaledFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from jumpqueue._journal import file as _journal_file

    monkeypatch.setattr(_journal_file, "_warned_about_sqlite", False)
    monkeypatch.setattr(_journal_file, "WAL_RESET_FIXED", (99, 0, 0))
    for name in ("one.db", "two.db"):
        assert make_journaled(journal=str(tmp_path / name)).open_journal()
    warnings = [r.getMessage() for r in caplog.records if "WAL-reset" in r.getMessage()]
    assert len(warnings) == 1
    assert "before 3.51.3" in warnings[0]
    assert "Install jumpqueue[sqlite]" in warnings[0]
    monkeypatch.setattr(_journal_file, "_warned_about_sqlite", False)
    monkeypatch.setattr(_journal_file, "WAL_RESET_FIXED", (3, 0, 0))
    caplog.clear()
    assert make_journaled(journal=str(tmp_path / "three.db")).open_journal()
    assert not [r for r in caplog.records if "WAL-reset" in r.getMessage()]
