"""How a deferred call leaves this process (journal, broker): by name, with encoded arguments.

A call that leaves names its task (a registered `@task`, or a plain module-level
function registered when it is deferred) and carries its arguments as JSON, or
as pickle when the task or configuration opts in. Whatever is decoded runs only
if its name is known to the application: a record or message cannot make this
process call an arbitrary function.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._config import shown
from ._exceptions import InvalidCallError
from ._tasks import DEFAULT_OPTIONS, Task, import_path, lookup, register

if TYPE_CHECKING:
    from ._deferred import Deferred

#: Lists and dicts nested deeper than this are refused: a decoder would run out of stack,
#: and an argument that contains itself nests without end.
MAX_JSON_DEPTH = 100
#: Ints this short always convert to text (the lowest digit limit Python allows is 640).
_SHORT_INT_BITS = 2000


def registered_name(fn: Callable[..., Any], name: str) -> str:
    """The name under which fn is known, registering a plain function under its import path.

    Raises:
        InvalidCallError: fn cannot be found by name in another process: a
            lambda, a closure, or an object that is not its module's attribute.
    """
    known = lookup(name)
    if known is not None and known.fn is fn:
        return name
    path = import_path(fn)
    known = lookup(path)
    if known is not None and known.fn is fn:
        return path  # e.g. a task renamed by .options(name=...): its function is known
    hint = "; calls that leave the process must name a module-level function"
    if "<lambda>" in path:
        raise InvalidCallError(f"{name} is a lambda{hint}")
    if "<locals>" in path:
        raise InvalidCallError(f"{name} is defined inside a function (a closure){hint}")
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    found: Any = module
    for part in getattr(fn, "__qualname__", "").split("."):
        found = getattr(found, part, None)
    if isinstance(found, Task):
        found = found.fn
    if found is not fn:
        raise InvalidCallError(f"{name} is not importable as {path}{hint}")
    register(Task(fn, DEFAULT_OPTIONS))
    return path


def check_portable(deferred: Deferred[Any], serializer: str, *, where: str) -> str:
    """Raise unless the call can leave the process for `where`; the name it goes by.

    Raises:
        InvalidCallError: a lambda, a closure, a function of `__main__` or one
            not importable by its name, or arguments the serializer cannot carry.
    """
    if getattr(deferred.fn, "__module__", None) == "__main__":
        raise InvalidCallError(
            f"{deferred.name} is defined in __main__, which {where} cannot import; "
            "move it to a module"
        )
    name = registered_name(deferred.fn, deferred.name)
    encode_arguments(name, deferred.args, deferred.kwargs, serializer=serializer)
    return name


def encode_arguments(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, serializer: str
) -> bytes:
    """The arguments as bytes; JSON unless the serializer is "pickle".

    JSON carries None, bools, numbers, strings, lists, tuples (which arrive as
    lists) and dicts with string keys; anything else is refused here rather
    than changed on the way.

    Raises:
        InvalidCallError: an argument cannot be encoded; the message says which.
    """
    if serializer == "pickle":
        try:
            return pickle.dumps((args, kwargs), pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # noqa: BLE001 -- whatever pickle raises, the call is refused
            raise InvalidCallError(
                f"the arguments of {name} cannot be pickled: {_unpicklable(args, kwargs)} "
                f"({type(error).__name__}: {error})"
            ) from None
    for index, value in enumerate(args):
        _check_argument(name, f"args[{index}]", value)
    for key, value in kwargs.items():
        _check_argument(name, f"kwargs[{key!r}]", value)
    return json.dumps([list(args), kwargs], separators=(",", ":")).encode()


def decode_arguments(data: bytes, *, serializer: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments `encode_arguments` encoded."""
    if serializer == "pickle":
        args, kwargs = pickle.loads(data)  # noqa: S301 -- opted in, from our own 0600 journal
        return tuple(args), dict(kwargs)
    args, kwargs = json.loads(data)
    return tuple(args), kwargs


def known_task(name: str) -> Task[Any, Any] | None:
    """The task a decoded call may run, or None if the application does not know that name."""
    return lookup(name)


def _unpicklable(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    # Which argument pickle refuses, found again one by one once the whole has failed.
    named = [(f"args[{index}]", value) for index, value in enumerate(args)]
    named += [(f"kwargs[{key!r}]", value) for key, value in kwargs.items()]
    for where, value in named:
        try:
            pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001, PERF203 -- the culprit, however pickle says it
            return where
    return "their whole"


class _TooDeepError(Exception):
    """An argument nests deeper than `MAX_JSON_DEPTH`; the top-level check names it."""


def _check_argument(name: str, where: str, value: object) -> None:
    try:
        _check_json(name, where, value, 0)
    except _TooDeepError:
        raise InvalidCallError(
            f"{name}: {where} nests lists and dicts more than {MAX_JSON_DEPTH} deep, or "
            "contains itself, which JSON cannot carry"
        ) from None


def _check_json(name: str, where: str, value: object, depth: int) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if value.bit_length() > _SHORT_INT_BITS:
            _check_long_int(name, where, value)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidCallError(f"{name}: {where} is {value}, which JSON cannot carry")
        return
    if isinstance(value, (list, tuple)):
        if depth == MAX_JSON_DEPTH:
            raise _TooDeepError
        for index, item in enumerate(value):
            _check_json(name, f"{where}[{index}]", item, depth + 1)
        return
    if isinstance(value, dict):
        if depth == MAX_JSON_DEPTH:
            raise _TooDeepError
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidCallError(
                    f"{name}: {where} has the key {shown(key)}; JSON objects take string keys only"
                )
            _check_json(name, f"{where}[{key!r}]", item, depth + 1)
        return
    raise InvalidCallError(
        f"{name}: {where} is a {type(value).__name__}, which JSON cannot carry; pass plain "
        "data (ids, strings, numbers), or opt in to pickle with serializer='pickle'"
    )


def _check_long_int(name: str, where: str, value: int) -> None:
    # JSON writes an int in decimal, which Python refuses past `sys.get_int_max_str_digits()`.
    try:
        int.__repr__(value)
    except ValueError:
        limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
        raise InvalidCallError(
            f"{name}: {where} is an int of about {int(value.bit_length() * math.log10(2))} "
            f"digits, more than Python converts to text (sys.get_int_max_str_digits() is "
            f"{limit}); pass it as a str, or opt in to pickle with serializer='pickle'"
        ) from None
