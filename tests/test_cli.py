from __future__ import annotations

from pathlib import Path

import pytest

from jumpqueue.cli import main


@pytest.mark.timeout(60)
def test_cli_demo_serves_a_spike_on_a_real_server_and_accounts_for_every_call(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plot = tmp_path / "timeline.png"
    assert main(["demo", "--seconds", "4", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "spike x10" in out
    assert "drained by itself" in out
    assert "/jumpqueue/status?html" in out
    assert "calls accepted" in out
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_cli_requires_a_command() -> None:
    with pytest.raises(SystemExit):
        main([])
