"""Hypothesis strategies of the chaos suite: what users might pass to jumpqueue, sane or not."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

import jumpqueue
from jumpqueue import Config, TaskOptions

from . import chaos_tasks

#: Plain data, as a request handler would pass it: what JSON carries, and some it does not.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
        st.dictionaries(st.integers(-5, 5), children, max_size=3),
        st.frozensets(st.integers(-5, 5), max_size=3),
    ),
    max_leaves=12,
) | st.sampled_from(
    [
        object(),
        chaos_tasks.identity,
        chaos_tasks.CallableObject(),
        Ellipsis,
        chaos_tasks.BrokenRepr(),
    ]
)

#: Module-level functions and tasks, and what defer() must refuse.
_CALLABLES: list[Any] = [
    chaos_tasks.identity,
    chaos_tasks.add,
    chaos_tasks.fails,
    chaos_tasks.coroutine_identity,
    chaos_tasks.generator,
    chaos_tasks.succeed,
    chaos_tasks.fail,
    chaos_tasks.fail_then_succeed,
    chaos_tasks.succeed_async,
    chaos_tasks.CallableObject(),
    chaos_tasks.CallableObject().method,
    chaos_tasks.CallableObject,
    functools.partial(chaos_tasks.identity, 1),
    len,
    int,
    str,
    max,
    lambda value=None: value,
    None,
    1,
    "chaos_tasks.identity",
    b"",
    [chaos_tasks.identity],
    10**5000,
    chaos_tasks.BrokenRepr(),
]
callables = st.sampled_from(_CALLABLES)

#: Keyword names as callers might spell them.
keywords = st.sampled_from(["value", "a", "b", "token", "timeout"]) | st.text(max_size=6)


@st.composite
def calls(draw: st.DrawFn) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """A function, its positional and its keyword arguments."""
    fn = draw(callables)
    args = tuple(draw(st.lists(values, max_size=3)))
    kwargs = draw(st.dictionaries(keywords, values, max_size=2))
    return fn, args, kwargs


#: Values of any type an option might be given (the right type among them, in and out of
#: range); numbers of a size a timer can wait for (`extreme_numbers` has the others).
option_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(min_value=-1e6, max_value=1e6) | st.sampled_from([math.nan, math.inf, -math.inf]),
    st.sampled_from([0, 1, 2, -1, 0.5, 1e-9, 1e-300, math.inf, -math.inf]),
    st.text(max_size=12),
    st.sampled_from(
        [
            "wait",
            "reject",
            "drop",
            "inline",
            "spill",
            "thread",
            "async",
            "json",
            "pickle",
            "FULL",
            "normal",
            "memory",
            "overload",
            "local",
            "journal",
            "raise",
            "fixed",
            "exponential",
            "512MiB",
            "1G",
            "16m",
            "1e400G",
            "nanG",
            "-1k",
        ]
    ),
    st.sampled_from([ValueError, (ValueError, KeyError), int, (), object(), [ValueError]]),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    # Values no message can show as they are: ints too long to write out, a failing repr().
    st.sampled_from([10**5000, -(10**5000), 10**400, -(10**400), chaos_tasks.BrokenRepr()]),
)

#: Finite numbers too large for a timer or a clock: a bound that is, in effect, no bound.
extreme_numbers = st.sampled_from(
    [1e10, 1e18, 1e300, sys.float_info.max, 2**63, 2**70, 10**30, 10**400]
)

CONFIG_FIELDS = [field.name for field in dataclasses.fields(Config)]
TASK_FIELDS = [field.name for field in dataclasses.fields(TaskOptions)]
#: Options of Config that a property test may set freely: no file, process or broker.
SAFE_CONFIG_FIELDS = [
    name
    for name in CONFIG_FIELDS
    if name not in ("journal", "backend", "start_method", "max_processes", "memory_limit")
]
#: Misspelt and foreign option names.
unknown_names = st.sampled_from(["max_worker", "timeout", "retries", "MAX_WORKERS", "", "journal_"])


def option_names(fields: list[str]) -> st.SearchStrategy[str]:
    """Known option names mostly, and now and then a wrong one."""
    return st.sampled_from(fields) | unknown_names


def task_decorations() -> st.SearchStrategy[tuple[dict[str, Any], Callable[..., Any]]]:
    """Options for `@jumpqueue.task`, and what it decorates."""
    targets = st.sampled_from(
        [
            chaos_tasks.identity,
            chaos_tasks.coroutine_identity,
            len,
            chaos_tasks.CallableObject(),
            None,
            1,
            "identity",
            chaos_tasks.succeed,
        ]
    )
    options = st.dictionaries(option_names(TASK_FIELDS), option_values, max_size=3)
    return st.tuples(options, targets)


def make_task(options: dict[str, Any], target: Any) -> jumpqueue.Task[..., Any]:
    """`@jumpqueue.task(**options)` applied to target (may raise)."""
    decorator: Any = jumpqueue.task(**options)
    made: jumpqueue.Task[..., Any] = decorator(target)
    return made
