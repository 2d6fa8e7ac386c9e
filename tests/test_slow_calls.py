from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest

from jumpqueue import Config, ConfigurationError

from .conftest import RuntimeFactory


class SlowLog(logging.Handler):
    """Collects the slow-call warnings of the "jumpqueue" logger; `logged` is set at the first."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.logged = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "slow call" in record.getMessage():
            self.messages.append(record.getMessage())
            self.logged.set()


@pytest.fixture
def slow_log() -> Iterator[SlowLog]:
    handler = SlowLog()
    logger = logging.getLogger("jumpqueue")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def waits_in_a_thread(release: threading.Event) -> str:
    release.wait(10)
    return "done"


async def waits_in_a_coroutine(release: threading.Event) -> str:
    await asyncio.to_thread(release.wait, 10)
    return "done"


@pytest.mark.parametrize(
    ("function", "where", "frame"),
    [
        (waits_in_a_thread, "in thread jumpqueue-thread-", "in waits_in_a_thread"),
        (waits_in_a_coroutine, "in its coroutine:", "in waits_in_a_coroutine"),
    ],
)
def test_slow_call_is_logged_once_with_where_it_is(
    make_runtime: RuntimeFactory,
    slow_log: SlowLog,
    function: object,
    where: str,
    frame: str,
) -> None:
    runtime = make_runtime(slow_call_threshold=0.05)
    release = threading.Event()
    handle = runtime.defer(function, release)  # type: ignore[call-overload]
    assert slow_log.logged.wait(5)
    release.set()
    assert handle.result(timeout=5) == "done"
    runtime.shutdown(timeout=5)
    [message] = slow_log.messages
    assert f"{handle.name} [{handle.id}] attempt 1 has run for " in message
    assert "(slow_call_threshold=0.05)" in message
    assert where in message
    assert frame in message  # the call's own frame, in its stack


def test_slow_call_log_is_off_by_default_and_its_timer_thread_not_started(
    make_runtime: RuntimeFactory, slow_log: SlowLog
) -> None:
    runtime = make_runtime()
    assert runtime.defer(int, "1").result(timeout=5) == 1
    assert runtime._dispatcher._scheduler._thread is None  # no timer armed: no thread
    assert not slow_log.messages


def test_slow_call_threshold_from_the_environment_and_checked() -> None:
    assert Config().slow_call_threshold is None
    config = Config.from_env({"JUMPQUEUE_SLOW_CALL_THRESHOLD": "2.5"})
    assert config.slow_call_threshold == 2.5
    assert Config.from_env({"JUMPQUEUE_SLOW_CALL_THRESHOLD": "none"}).slow_call_threshold is None
    for bad in (0, -1.0, "5"):
        with pytest.raises(ConfigurationError, match="slow_call_threshold"):
            Config(slow_call_threshold=bad)  # type: ignore[arg-type]
