from __future__ import annotations

import datetime
from typing import Any

import pytest

import jumpqueue
from jumpqueue import InvalidCallError
from jumpqueue._codec import decode_arguments, encode_arguments, known_task, registered_name

from .conftest import RuntimeFactory


@jumpqueue.task(name="tests.codec.named")
def named_task(x: int) -> int:
    return x


def plain_function(x: int) -> int:
    return x + 1


def echo(value: Any) -> Any:
    return value


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


def _nested(depth: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


def _containing_itself() -> tuple[list[Any], dict[str, Any]]:
    looped_list: list[Any] = [1]
    looped_list.append(looped_list)
    looped_dict: dict[str, Any] = {}
    looped_dict["me"] = {"again": looped_dict}
    return looped_list, looped_dict


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((1, 10**5000), {}, r"args\[1\] is an int of about 5000 digits"),
        ((), {"deep": _nested(10_000)}, r"kwargs\['deep'\] nests .* more than 100 deep"),
        ((_containing_itself()[0],), {}, r"args\[0\] .* contains itself"),
        ((), {"d": _containing_itself()[1]}, r"kwargs\['d'\] .* contains itself"),
    ],
)
def test_codec_json_refuses_huge_ints_and_endless_nesting_naming_the_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    # They once escaped as ValueError (int to text) and RecursionError.
    with pytest.raises(InvalidCallError, match=message):
        encode_arguments("f", args, kwargs, serializer="json")


def test_codec_json_carries_long_ints_and_deep_nesting_within_its_limits() -> None:
    args = (10**600, _nested(99))
    data = encode_arguments("f", args, {}, serializer="json")
    assert decode_arguments(data, serializer="json") == (args, {})


def test_codec_pickle_names_the_argument_it_refuses() -> None:
    with pytest.raises(InvalidCallError, match=r"pickled: kwargs\['deep'\] \(RecursionError"):
        encode_arguments("f", (1,), {"deep": _nested(100_000)}, serializer="pickle")
    looped = _containing_itself()[0]
    data = encode_arguments("f", (10**5000, looped), {}, serializer="pickle")
    (number, copy), _ = decode_arguments(data, serializer="pickle")
    assert number == 10**5000
    assert copy[1] is copy


def test_codec_defer_refuses_unencodable_arguments_as_invalid_calls(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(check_handoff=True)
    bad_arguments: list[Any] = [10**5000, _nested(5000), _containing_itself()[0]]
    for bad in bad_arguments:
        with pytest.raises(InvalidCallError, match=r"args\[0\]"):
            runtime.defer(echo, bad)
    assert runtime.stats().submitted == 0


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __hash__(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("key", "shown"),
    [(10**5000, "an int of about 5000 digits"), (_ReprRaises(), "a _ReprRaises that cannot")],
    ids=["huge-int", "repr-raises"],
)
def test_codec_json_names_a_key_that_cannot_be_shown(key: object, shown: str) -> None:
    with pytest.raises(InvalidCallError, match=shown):
        encode_arguments("t", ({key: 1},), {}, serializer="json")
