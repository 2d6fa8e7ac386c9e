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

from ._exceptions import InvalidCallError
from ._tasks import DEFAULT_OPTIONS, Task, import_path, lookup, register

if TYPE_CHECKING:
    from ._deferred import Deferred


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
                f"the arguments of {name} cannot be pickled ({type(error).__name__}: {error})"
            ) from None
    for index, value in enumerate(args):
        _check_json(name, f"args[{index}]", value)
    for key, value in kwargs.items():
        _check_json(name, f"kwargs[{key!r}]", value)
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


def _check_json(name: str, where: str, value: object) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidCallError(f"{name}: {where} is {value}, which JSON cannot carry")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(name, f"{where}[{index}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidCallError(
                    f"{name}: {where} has the key {key!r}; JSON objects take string keys only"
                )
            _check_json(name, f"{where}[{key!r}]", item)
        return
    raise InvalidCallError(
        f"{name}: {where} is a {type(value).__name__}, which JSON cannot carry; pass plain "
        "data (ids, strings, numbers), or opt in to pickle with serializer='pickle'"
    )
