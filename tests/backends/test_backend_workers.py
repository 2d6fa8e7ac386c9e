"""The worker side of a hand-off, in process: decoding, resolving, context, retry rules."""

from __future__ import annotations

import base64
import pickle
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery.exceptions import Reject

import jumpqueue
from jumpqueue import Config, ConfigurationError, Task, TaskOptions
from jumpqueue._codec import encode_arguments
from jumpqueue.backends import BACKENDS, _message, from_url
from jumpqueue.backends import celery as celery_backend
from jumpqueue.backends import rq as rq_backend
from jumpqueue.context import carried, request_id, restored, traceparent

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOT_CALLABLE = 42
calls: list[tuple[Any, ...]] = []


def helper(*args: Any) -> tuple[Any, ...]:
    calls.append((*args, request_id.get(), traceparent.get()))
    return args


async def async_helper(x: int) -> int:
    return x * 2


@jumpqueue.task(name="tests.backends.workers.named")
def named(x: int) -> int:
    return x + 1


def fails(kind: str) -> None:
    raise {"value": ValueError, "key": KeyError}[kind](kind)


unregistered = Task(helper, TaskOptions(name="tests.backends.workers.unregistered"))


def message(path: str, *args: Any, name: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "id": "id-1",
        "name": name or path,
        "path": path,
        "serializer": "json",
        "arguments": encode_arguments("f", args, {}, serializer="json").decode(),
        "context": {"request_id": "req-9", "traceparent": TRACE},
        "retries": 0,
        "retry_backoff": 1.0,
        "retry_on": ["builtins.Exception"],
        **fields,
    }


def fake_task(retries: int = 0) -> Any:
    retried: list[dict[str, Any]] = []

    def retry(**options: Any) -> Exception:
        retried.append(options)
        return RuntimeError("retry")

    return SimpleNamespace(
        request=SimpleNamespace(id="id-1", retries=retries), retry=retry
    ), retried


def test_workers_decode_arguments_by_version_and_serializer() -> None:
    assert _message.arguments(message("m.f", 1, "a"), accept_pickle=False) == ((1, "a"), {})
    with pytest.raises(ValueError, match="version"):
        _message.arguments({**message("m.f"), "v": 2}, accept_pickle=True)
    data = base64.b64encode(pickle.dumps(((1,), {"k": {2}}))).decode()
    pickled = {**message("m.f"), "serializer": "pickle", "arguments": data}
    with pytest.raises(ValueError, match="not accepted here"):
        _message.arguments(pickled, accept_pickle=False)
    assert _message.arguments(pickled, accept_pickle=True) == ((1,), {"k": {2}})


def test_workers_run_inside_the_carried_context_and_await_coroutines() -> None:
    calls.clear()
    assert _message.run(message("m.f"), helper, (1,), {}) == (1,)
    assert calls == [(1, "req-9", TRACE)]
    assert request_id.get() is None
    assert _message.run(message("m.f"), async_helper, (4,), {}) == 8


def test_workers_retry_rules_match_class_names_along_the_mro() -> None:
    rules = {"retry_on": ["builtins.LookupError"], "retry_backoff": 2.0}
    assert _message.should_retry(rules, KeyError("k"))
    assert not _message.should_retry(rules, ValueError("v"))
    assert [_message.retry_delay(rules, done, jitter=False) for done in range(3)] == [2.0, 4.0, 8.0]
    assert _message.retry_delay(rules, 20, jitter=False) == 300.0
    assert _message.retry_delay({**rules, "retry_schedule": "fixed"}, 5, jitter=True) == 2.0


def test_workers_context_carries_only_valid_small_values() -> None:
    token = request_id.set("x" * 500)
    trace = traceparent.set("not-a-trace")
    try:
        assert carried() == {}
    finally:
        request_id.reset(token)
        traceparent.reset(trace)
    with restored({"request_id": "r", "traceparent": TRACE, "other": "ignored"}):
        assert carried() == {"request_id": "r", "traceparent": TRACE}
    assert carried() == {}


def test_workers_rq_runs_by_import_path() -> None:
    calls.clear()
    assert rq_backend.run(message(f"{__name__}.helper", 1, "a")) == (1, "a")
    assert rq_backend.run(message(f"{__name__}.named", 1, name="tests.backends.workers.named")) == 2
    assert rq_backend.run(message(f"{__name__}.unregistered", 5, name="nowhere")) == (5,)
    with pytest.raises(KeyError):  # outside a worker there is no job to stop retrying
        rq_backend.run(message(f"{__name__}.fails", "key", retry_on=["builtins.ValueError"]))
    with pytest.raises(TypeError, match="not a module-level function"):
        rq_backend.run(message(f"{__name__}.NOT_CALLABLE"))
    with pytest.raises(TypeError, match="not a module-level function"):
        rq_backend.run(message("os.system", "true"))  # a builtin, never deferred by name


def test_workers_celery_runs_only_functions_the_application_knows() -> None:
    task, _ = fake_task()
    calls.clear()
    assert celery_backend._run(
        task, message(f"{__name__}.helper", 3), (__name__,), accept_pickle=False
    ) == (3,)
    assert calls == [(3, "req-9", TRACE)]
    known = message(f"{__name__}.named", 1, name="tests.backends.workers.named")
    assert celery_backend._run(task, known, (), accept_pickle=False) == 2
    assert celery_backend._run(
        task, message(f"{__name__}.unregistered", 7), (__name__,), accept_pickle=False
    ) == (7,)
    for refused in (
        message(f"{__name__}.helper", 3),  # its module is not declared
        message("os.system", "true"),  # declared, but not a Python function
        {"v": 1, "name": 3, "path": None},
    ):
        with pytest.raises(Reject):
            celery_backend._run(task, refused, ("os", "celery"), accept_pickle=False)
    with pytest.raises(Reject):  # imported into a declared module, defined elsewhere
        celery_backend._run(task, message(f"{__name__}.Reject"), (__name__,), accept_pickle=False)
    with pytest.raises(Reject):
        celery_backend._run(task, {**known, "v": 0}, (), accept_pickle=False)


def test_workers_celery_retries_by_the_task_rules() -> None:
    task, retried = fake_task(retries=1)
    retryable = message(
        f"{__name__}.fails", "value", retries=3, retry_backoff=2.0, retry_on=["builtins.ValueError"]
    )
    with pytest.raises(RuntimeError, match="retry"):
        celery_backend._run(task, retryable, (__name__,), accept_pickle=False)
    [options] = retried
    assert options["max_retries"] == 3
    assert 2.0 <= options["countdown"] <= 4.0  # the second delay, with jitter
    assert isinstance(options["exc"], ValueError)
    with pytest.raises(KeyError):
        celery_backend._run(
            task, {**retryable, "arguments": '[["key"],{}]'}, (__name__,), accept_pickle=False
        )
    exhausted, _ = fake_task(retries=3)
    with pytest.raises(ValueError, match="value"):
        celery_backend._run(exhausted, retryable, (__name__,), accept_pickle=False)


def test_workers_backend_objects_check_their_arguments() -> None:
    with pytest.raises(ConfigurationError, match="broker URL or a Celery app"):
        celery_backend.CeleryBackend()
    backend = from_url("celery+redis://127.0.0.1:6379/1", queue="q")
    assert repr(backend) == "<CeleryBackend queue='q'>"
    assert celery_backend._names("a.b") == ("a.b",)
    assert celery_backend._names(None) == ()
    connection = redis.Redis()
    rq = rq_backend.RQBackend(connection=connection, queue="emails")
    assert repr(rq) == "<RQBackend queue='emails'>"
    executor = rq.open(Config(), host=None)  # type: ignore[arg-type]
    assert executor.name == "rq"
    executor.close()  # the connection is the caller's: left open
    connection.close()


def test_workers_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "rq", ("jumpqueue.backends.not_installed:X", "rq"))
    with pytest.raises(ConfigurationError, match=r"pip install 'jumpqueue\[rq\]'"):
        from_url("rq+redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigurationError, match=r"jumpqueue\[rq\]"):
        jumpqueue.Runtime(Config(backend="rq+redis://127.0.0.1:6379/0"))
