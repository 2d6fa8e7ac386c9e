from __future__ import annotations

import math
from typing import Any

import pytest

import jumpqueue
from jumpqueue import ConfigurationError, InvalidCallError, Task, TaskOptions
from jumpqueue._tasks import lookup


@jumpqueue.task
def double(x: int) -> int:
    return 2 * x


@jumpqueue.task(retries=2, timeout=5, name="tests.custom-name", always=True)
def named(x: int) -> int:
    return x


def test_task_stays_callable_as_a_function() -> None:
    assert double(4) == 8
    assert vars(double)["__name__"] == "double"
    assert double.__doc__ is None or isinstance(double.__doc__, str)


def test_task_defer_runs_on_the_default_runtime() -> None:
    assert double.defer(21).result(timeout=5) == 42


def test_task_carries_its_options_and_name() -> None:
    assert named.task_options.retries == 2
    assert named.task_options.timeout == 5
    assert named.task_options.always is True
    assert named.name == "tests.custom-name"
    assert double.name == f"{__name__}.double"
    assert lookup("tests.custom-name") is named
    assert lookup(f"{__name__}.double") is double


def test_task_options_returns_a_copy_with_overrides() -> None:
    quick = named.options(timeout=1, retries=0)
    assert isinstance(quick, Task)
    assert quick.task_options.timeout == 1
    assert quick.task_options.retries == 0
    assert quick.task_options.always is True
    assert named.task_options.timeout == 5
    assert quick.name == named.name
    assert quick.defer(3).result(timeout=5) == 3
    renamed = named.options(name="other")
    assert renamed.name == "other"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -3}, "timeout"),
        ({"retry_backoff": -1}, "retry_backoff"),
        ({"retry_on": "ValueError"}, "retry_on"),
        ({"retry_on": (ValueError, 3)}, "retry_on"),
        ({"on_overload": "panic"}, "on_overload"),
        ({"executor": "gpu"}, "executor"),
        ({"always": "yes"}, "always"),
        ({"name": ""}, "name"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_task_bad_options_raise_naming_the_option(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        jumpqueue.task(**options)
    with pytest.raises(ConfigurationError, match=field):
        double.options(**options)


def test_task_options_accept_a_single_exception_type_and_infinite_timeout() -> None:
    options = TaskOptions(retry_on=ValueError, timeout=math.inf)
    assert options.retry_on == (ValueError,)
    assert options.timeout == math.inf


def test_task_decorating_a_non_callable_or_a_task_fails() -> None:
    with pytest.raises(InvalidCallError):
        jumpqueue.task(42)  # type: ignore[call-overload]
    with pytest.raises(InvalidCallError, match="already a task"):
        jumpqueue.task(double)


def test_task_repr_names_it() -> None:
    assert f"{__name__}.double" in repr(double)
