from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import sys
import threading
from collections.abc import Iterator

import pytest

import jumpqueue
from jumpqueue import (
    InvalidCallError,
    Status,
    TaskExitError,
    TaskNotRunError,
)

from .conftest import RuntimeFactory

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def add(a: int, b: int = 0) -> int:
    return a + b


async def add_async(a: int, b: int = 0) -> int:
    await asyncio.sleep(0)
    return a + b


def test_defer_runs_a_function_on_a_worker_thread() -> None:
    caller = threading.get_ident()
    deferred = jumpqueue.defer(threading.get_ident)
    assert deferred.result(timeout=5) != caller
    assert deferred.status is Status.SUCCEEDED
    assert str(deferred.status) == "succeeded"
    assert deferred.done()
    assert deferred.attempts == 1
    assert len(deferred.id) >= 24
    assert "succeeded" in repr(deferred)


def test_defer_passes_arguments() -> None:
    assert jumpqueue.defer(add, 1, b=2).result(timeout=5) == 3


def test_defer_coroutine_outside_a_loop_runs_on_the_background_loop() -> None:
    assert jumpqueue.defer(add_async, 2, b=3).result(timeout=5) == 5


def test_defer_coroutine_inside_a_loop_runs_on_that_loop() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()

        async def which_loop() -> bool:
            return asyncio.get_running_loop() is loop

        deferred = jumpqueue.defer(which_loop)
        assert await asyncio.to_thread(deferred.wait, 5)
        return deferred.result()

    assert asyncio.run(main()) is True


def test_defer_coroutine_function_on_the_thread_executor_runs_on_its_own_loop() -> None:
    task = jumpqueue.task(add_async).options(executor="thread")
    assert task.defer(1, 1).result(timeout=5) == 2


def test_defer_copies_contextvars_into_threads_and_coroutines() -> None:
    async def read_async() -> str:
        return request_id.get()

    token = request_id.set("req-42")
    try:
        in_thread = jumpqueue.defer(request_id.get)
        in_loop = jumpqueue.defer(read_async)
    finally:
        request_id.reset(token)
    assert in_thread.result(timeout=5) == "req-42"
    assert in_loop.result(timeout=5) == "req-42"


def test_defer_changes_in_a_task_do_not_leak_into_the_caller() -> None:
    def set_it() -> None:
        request_id.set("changed")

    jumpqueue.defer(set_it).result(timeout=5)
    assert request_id.get() == "none"


def test_defer_failed_call_raises_its_exception_from_result() -> None:
    def boom() -> None:
        raise KeyError("missing")

    deferred = jumpqueue.defer(boom)
    with pytest.raises(KeyError, match="missing"):
        deferred.result(timeout=5)
    assert deferred.status is Status.FAILED
    assert isinstance(deferred.exception(), KeyError)


async def exit_async(code: int) -> None:
    await asyncio.sleep(0)
    sys.exit(code)


def test_defer_sys_exit_fails_the_call_and_never_reaches_the_caller(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(max_workers=1)
    handles = [runtime.defer(sys.exit, 3), runtime.defer(exit_async, 4)]
    for handle, code in zip(handles, (3, 4), strict=True):
        with pytest.raises(TaskExitError, match=rf"sys.exit\({code}\)") as raised:
            handle.result(timeout=5)
        assert isinstance(raised.value.__cause__, SystemExit)
        assert raised.value.__cause__.code == code
        assert handle.status is Status.FAILED
    # The thread and the background loop that ran them still serve.
    assert runtime.defer(add, 1, 2).result(timeout=5) == 3
    assert runtime.defer(add_async, 3, 4).result(timeout=5) == 7
    assert runtime.stats().failed == 2


def test_defer_sys_exit_is_retried_only_if_retry_on_names_it(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    def leave() -> None:
        sys.exit(1)

    once = runtime.defer(jumpqueue.task(leave).options(retries=2, retry_backoff=0))
    assert isinstance(once.exception(timeout=5), TaskExitError)
    assert once.attempts == 1
    retried = jumpqueue.task(leave).options(retries=2, retry_backoff=0, retry_on=SystemExit)
    thrice = runtime.defer(retried)
    assert isinstance(thrice.exception(timeout=5), TaskExitError)
    assert thrice.attempts == 3


def test_defer_sys_exit_in_the_applications_own_thread_goes_on_up_it(
    make_runtime: RuntimeFactory,
) -> None:
    # There it may be the thread's own: a signal handler's sys.exit() lands in whatever runs.
    runtime = make_runtime(max_async=1, max_pending=1, on_overload="inline")
    handles: list[jumpqueue.Deferred[None]] = []

    async def main() -> None:
        handles.append(runtime.defer(exit_async, 5))
        await asyncio.Event().wait()  # until the call's exit stops this loop

    with pytest.raises(SystemExit):
        asyncio.run(main())
    assert isinstance(handles[0].exception(timeout=5), TaskExitError)
    gate = threading.Event()
    runtime.defer(gate.wait, 10)  # fills the backlog: the next call runs inline
    with pytest.raises(SystemExit):
        runtime.defer(sys.exit, 6)
    gate.set()
    assert runtime.stats().failed == 2


def test_defer_result_times_out_while_the_call_runs() -> None:
    gate = threading.Event()
    deferred = jumpqueue.defer(gate.wait, 5)
    with pytest.raises(TimeoutError):
        deferred.result(timeout=0.01)
    assert deferred.wait(0.01) is False
    gate.set()
    assert deferred.result(timeout=5) is True


def test_defer_one_failure_does_not_affect_another() -> None:
    def boom() -> None:
        raise RuntimeError("x")

    failures = [jumpqueue.defer(boom) for _ in range(5)]
    successes = [jumpqueue.defer(add, i) for i in range(5)]
    assert [d.result(timeout=5) for d in successes] == list(range(5))
    assert all(isinstance(d.exception(timeout=5), RuntimeError) for d in failures)


def test_defer_failure_is_logged_with_id_name_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode() -> None:
        raise ValueError("kaboom")

    deferred = jumpqueue.defer(explode)
    deferred.wait(5)
    records = [r for r in caplog.records if r.name == "jumpqueue" and r.levelname == "ERROR"]
    assert len(records) == 1
    assert deferred.id in records[0].getMessage()
    assert "explode" in records[0].getMessage()
    assert records[0].exc_info is not None


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "message"),
    [
        (42, (), {}, "callable"),
        ("print", (), {}, "callable"),
        (add, (), {}, "missing a required argument"),
        (add, (1, 2, 3), {}, "too many positional"),
        (add, (1,), {"a": 2}, "multiple values for argument 'a'"),
        (add, (1,), {"c": 2}, "unexpected keyword argument 'c'"),
    ],
)
def test_defer_bad_input_fails_at_the_call(
    fn: object, args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidCallError, match=message):
        jumpqueue.defer(fn, *args, **kwargs)  # type: ignore[call-overload]
    assert jumpqueue.stats().submitted == 0


def test_defer_coroutine_object_is_rejected_with_advice() -> None:
    coroutine = add_async(1)
    try:
        with pytest.raises(InvalidCallError, match="coroutine function, not a coroutine object"):
            jumpqueue.defer(coroutine)  # type: ignore[call-overload]
    finally:
        coroutine.close()


def test_defer_plain_function_on_the_async_executor_is_rejected() -> None:
    with pytest.raises(InvalidCallError, match="coroutine function"):
        jumpqueue.task(add).options(executor="async").defer(1)


def test_defer_accepts_callables_without_signatures_and_partials() -> None:
    assert jumpqueue.defer(functools.partial(add, 1), 2).result(timeout=5) == 3
    assert jumpqueue.defer(max, 1, 5).result(timeout=5) == 5

    class Adder:
        def __call__(self, x: int) -> int:
            return x + 1

    assert jumpqueue.defer(Adder(), 1).result(timeout=5) == 2


def test_defer_from_many_threads_at_once_loses_nothing(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_workers=4, max_pending=100_000)
    counter = 0
    lock = threading.Lock()

    def bump() -> None:
        nonlocal counter
        with lock:
            counter += 1

    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(500):
            runtime.defer(bump)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runtime.shutdown(timeout=20)
    stats = runtime.stats()
    assert counter == 4000
    assert stats.submitted == stats.succeeded == 4000
    assert stats.in_flight == 0


def test_defer_shed_handle_raises_task_not_run(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(max_pending=1, on_overload="drop")
    gate = threading.Event()
    first = runtime.defer(gate.wait, 5)
    dropped = runtime.defer(add, 1)
    assert dropped.status is Status.SHED
    with pytest.raises(TaskNotRunError) as caught:
        dropped.result(timeout=1)
    assert caught.value.status == "shed"
    gate.set()
    assert first.result(timeout=5) is True


def test_defer_around_calls_are_entered_once_per_attempt() -> None:
    from jumpqueue.integration import wrap_calls

    entered: list[str] = []

    @contextlib.contextmanager
    def around() -> Iterator[None]:
        entered.append("in")
        yield

    with wrap_calls(around):
        on_thread = jumpqueue.task(add_async).options(executor="thread").defer(1, 2)
        on_loop = jumpqueue.defer(add_async, 3)
        plain = jumpqueue.defer(add, 4)
    assert [d.result(timeout=5) for d in (on_thread, on_loop, plain)] == [3, 3, 4]
    assert entered == ["in", "in", "in"]


def test_status_hashes_and_compares_as_its_value() -> None:
    assert {"succeeded": 1}[Status.SUCCEEDED] == 1
    by_status: dict[str, int] = {Status.HELD: 2}
    assert by_status["held"] == 2
    assert Status("timed_out") is Status.TIMED_OUT
    assert len({*Status, *(status.value for status in Status)}) == len(Status)
