from __future__ import annotations

import datetime
from typing import Any

import pytest

import jumpqueue
from jumpqueue import InvalidCallError
from jumpqueue._codec import decode_arguments, encode_arguments, known_task, registered_name


@jumpqueue.task(name="tests.codec.named")
def named_task(x: int) -> int:
    return x


def plain_function(x: int) -> int:
    return x + 1


def test_codec_registered_task_keeps_its_name() -> None:
    assert registered_name(named_task.fn, "tests.codec.named") == "tests.codec.named"
    assert known_task("tests.codec.named") is named_task


def test_codec_plain_function_is_registered_by_import_path() -> None:
    name = registered_name(plain_function, "ignored")
    assert name == f"{__name__}.plain_function"
    known = known_task(name)
    assert known is not None
    assert known.fn is plain_function


def test_codec_refuses_lambdas_closures_and_unimportable_callables() -> None:
    def closure() -> None:
        pass

    with pytest.raises(InvalidCallError, match="lambda"):
        registered_name(lambda: None, "l")
    with pytest.raises(InvalidCallError, match="closure"):
        registered_name(closure, "c")
    shadowed = plain_function
    shadowed.__qualname__ = "renamed"
    try:
        with pytest.raises(InvalidCallError, match="not importable"):
            registered_name(shadowed, "s")
    finally:
        shadowed.__qualname__ = "plain_function"


def test_codec_unknown_names_are_not_resolved() -> None:
    assert known_task("os.system") is None


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_codec_round_trips_plain_data(serializer: str) -> None:
    args = (1, "two", [3.5, None], {"k": True})
    kwargs: dict[str, Any] = {"nested": {"a": [1, 2]}}
    data = encode_arguments("f", args, kwargs, serializer=serializer)
    assert decode_arguments(data, serializer=serializer) == (args, kwargs)


def test_codec_pickle_carries_what_json_cannot() -> None:
    moment = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    data = encode_arguments("f", (moment,), {}, serializer="pickle")
    assert decode_arguments(data, serializer="pickle") == ((moment,), {})
    with pytest.raises(InvalidCallError, match="cannot be pickled"):
        encode_arguments("f", (lambda: None,), {}, serializer="pickle")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((object(),), {}, r"args\[0\] is a object"),
        ((), {"when": datetime.date(2026, 1, 1)}, r"kwargs\['when'\] is a date"),
        (([1, {2: "x"}],), {}, "string keys"),
        ((float("nan"),), {}, "nan"),
        (({"deep": [set()]},), {}, r"args\[0\]\['deep'\]\[0\] is a set"),
    ],
)
def test_codec_json_refuses_what_it_would_change(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidCallError, match=message):
        encode_arguments("f", args, kwargs, serializer="json")


def test_codec_serializer_option_is_validated() -> None:
    with pytest.raises(jumpqueue.ConfigurationError, match="serializer"):
        jumpqueue.task(serializer="yaml")  # type: ignore[call-overload]


@jumpqueue.task(retries=4)
def retried_task(x: int) -> int:
    return x


def test_codec_renamed_copy_resolves_without_overwriting_the_task() -> None:
    renamed = retried_task.options(name="tests.codec.renamed")
    name = registered_name(renamed.fn, renamed.name)
    assert name == f"{__name__}.retried_task"
    known = known_task(name)
    assert known is retried_task
    assert known.task_options.retries == 4
