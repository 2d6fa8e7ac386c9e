from __future__ import annotations

import datetime

import pytest

import jumpqueue
from jumpqueue import Config, ConfigurationError, InvalidCallError
from jumpqueue.testing import immediate

from .conftest import RuntimeFactory


def send_receipt(order_id: int) -> int:
    return order_id


def test_check_handoff_refuses_at_defer_what_a_backend_could_not_take(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(check_handoff=True)
    with pytest.raises(InvalidCallError, match="args\\[0\\] is a datetime"):
        runtime.defer(send_receipt, datetime.datetime.now(tz=datetime.timezone.utc))  # type: ignore[call-overload]
    with pytest.raises(InvalidCallError, match="lambda"):
        runtime.defer(lambda: None)
    assert runtime.defer(send_receipt, 7).result(timeout=5) == 7  # still runs here


def test_check_handoff_is_off_by_default_for_apps_that_stay_local(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    assert runtime.defer(lambda: 3).result(timeout=5) == 3


def test_check_handoff_applies_under_testing_modes_with_a_backend(
    use_runtime: RuntimeFactory,
) -> None:
    use_runtime(backend="rq+redis://127.0.0.1:6379/15")  # never reached: nothing is sent
    with immediate() as calls:
        with pytest.raises(InvalidCallError, match="JSON cannot carry"):
            jumpqueue.defer(send_receipt, object())  # type: ignore[call-overload]
        assert jumpqueue.defer(send_receipt, 5).result(timeout=0) == 5
    assert len(calls) == 1


def test_check_handoff_reads_the_environment() -> None:
    assert Config.from_env({"JUMPQUEUE_CHECK_HANDOFF": "1"}).check_handoff is True
    assert Config.from_env({"JUMPQUEUE_CHECK_HANDOFF": "off"}).check_handoff is False
    with pytest.raises(ConfigurationError, match="JUMPQUEUE_CHECK_HANDOFF"):
        Config.from_env({"JUMPQUEUE_CHECK_HANDOFF": "maybe"})
    with pytest.raises(ConfigurationError, match="check_handoff"):
        Config(check_handoff="yes")  # type: ignore[arg-type]
