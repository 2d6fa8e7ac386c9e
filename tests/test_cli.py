from __future__ import annotations

import pytest

from jumpqueue.cli import main


def test_cli_demo_runs_a_spike_and_accounts_for_every_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--seconds", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "Every call accounted for" in out
    assert "spike" in out


def test_cli_requires_a_command() -> None:
    with pytest.raises(SystemExit):
        main([])
