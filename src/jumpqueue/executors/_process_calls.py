"""What may cross into a child process: checked at defer time, sent by reference where it can."""

from __future__ import annotations

import pickle
import sys
import types
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidCallError
from ._process_child import FunctionRef, resolve

if TYPE_CHECKING:
    from .._deferred import Deferred

_PICKLE = pickle.HIGHEST_PROTOCOL
Target = FunctionRef | Callable[..., Any]

_targets: weakref.WeakKeyDictionary[Callable[..., Any], FunctionRef] = weakref.WeakKeyDictionary()


def check_call(
    deferred: Deferred[Any], *, main_importable: bool, memory_limit: int | None = None
) -> None:
    """Raise `InvalidCallError` unless the call can be sent to a child process and run there.

    Args:
        deferred: the call, with its function and arguments.
        main_importable: whether a child can import functions of `__main__`.
        memory_limit: the children's address-space cap, if any: a child must hold
            the pickled arguments and what they unpickle to, so they may take at most
            half of it.
    """
    target_of(deferred.fn, deferred.name, main_importable=main_importable)
    try:
        size = len(pickle.dumps((deferred.args, deferred.kwargs), _PICKLE))
    except Exception as error:  # noqa: BLE001 -- whatever pickle raises, the call is refused
        raise InvalidCallError(
            f"the arguments of {deferred.name} cannot be sent to a child process "
            f"({type(error).__name__}: {error}); pass picklable values, such as ids"
        ) from None
    if memory_limit is not None and size > memory_limit // 2:
        raise InvalidCallError(
            f"the arguments of {deferred.name} take {size} bytes pickled, more than half of "
            f"memory_limit={memory_limit}: a child process could not receive them; "
            "pass ids or paths, and load the data in the call"
        )


def message(deferred: Deferred[Any]) -> bytes:
    """The bytes that ask a child to run the call (checked by `check_call` already)."""
    target = target_of(deferred.fn, deferred.name, main_importable=True)
    return pickle.dumps(
        (deferred.id, deferred.attempts, deferred.name, target, deferred.args, deferred.kwargs),
        _PICKLE,
    )


def target_of(fn: Callable[..., Any], name: str, *, main_importable: bool) -> Target:
    """How the child finds fn: by import path for a plain function, else fn pickled.

    Raises:
        InvalidCallError: fn cannot reach a child process.
    """
    ref = _targets.get(fn) if isinstance(fn, types.FunctionType) else None
    if ref is not None:
        return ref
    plain = isinstance(fn, types.FunctionType) or (
        isinstance(fn, types.BuiltinFunctionType)
        and isinstance(fn.__self__, (types.ModuleType, type(None)))
    )
    if not plain:  # a bound method, a partial, a callable object: pickle must manage
        try:
            pickle.dumps(fn, _PICKLE)
        except Exception as error:  # noqa: BLE001 -- whatever pickle raises, the call is refused
            raise InvalidCallError(
                f"{name} cannot be sent to a child process ({type(error).__name__}: {error}); "
                "use a module-level function or a picklable object"
            ) from None
        return fn
    ref = FunctionRef(fn.__module__, fn.__qualname__)
    _check_importable(fn, ref, name, main_importable=main_importable)
    if isinstance(fn, types.FunctionType):
        _targets[fn] = ref
    return ref


def _check_importable(
    fn: Callable[..., Any], ref: FunctionRef, name: str, *, main_importable: bool
) -> None:
    hint = "; a child process imports its function: define it at module level"
    if "<lambda>" in ref.qualname:
        raise InvalidCallError(f"{name} is a lambda{hint}")
    if "<locals>" in ref.qualname:
        raise InvalidCallError(f"{name} is defined inside a function (a closure){hint}")
    if ref.module == "__main__" and not main_importable:
        raise InvalidCallError(f"{name} is defined in a __main__ that is not a file{hint}")
    try:
        found = resolve(ref) if ref.module in sys.modules else None
    except AttributeError:
        found = None
    if found is not fn:
        raise InvalidCallError(
            f"{name} is not importable as {ref.module}.{ref.qualname} "
            f"(that name is {found!r}){hint}, under its own name"
        )
