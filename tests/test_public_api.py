from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import jumpqueue
from jumpqueue import integration

EXPECTED = [
    "CallFailure",
    "CallResult",
    "Config",
    "ConfigurationError",
    "Deferred",
    "InvalidCallError",
    "JumpQueueError",
    "OverloadedError",
    "Runtime",
    "RuntimeClosedError",
    "Stats",
    "Status",
    "ResultNotPortableError",
    "Task",
    "TaskNotRunError",
    "TaskOptions",
    "TaskTimeoutError",
    "configure",
    "current_attempt",
    "current_call_id",
    "defer",
    "get_runtime",
    "result",
    "shutdown",
    "stats",
    "task",
]

INTEGRATION = [
    "LARGE_BODY",
    "OVERLOADED_BODY",
    "CallObserver",
    "Exchange",
    "HttpCounters",
    "ObservedCall",
    "RequestScope",
    "add_observer",
    "await_until_received",
    "bind_exchange",
    "carry_from_headers",
    "current_scope",
    "drain_runtime",
    "log_overloaded",
    "overloaded_headers",
    "remove_observer",
    "start_runtime",
    "wait_until_received",
    "wrap_calls",
]


#: The modules `jumpqueue.contrib` may import: what a third party's glue could.
def test_public_api_all_is_pinned_and_sorted() -> None:
    assert sorted(jumpqueue.__all__) == jumpqueue.__all__
    assert set(EXPECTED) <= set(jumpqueue.__all__)
    for name in jumpqueue.__all__:
        value = getattr(jumpqueue, name)
        assert value.__doc__, f"{name} has no docstring"


def test_public_api_exceptions_share_one_root() -> None:
    errors = [getattr(jumpqueue, n) for n in jumpqueue.__all__ if n.endswith("Error")]
    assert errors
    for error in errors:
        assert issubclass(error, jumpqueue.JumpQueueError)
    assert issubclass(jumpqueue.ConfigurationError, ValueError)
    assert issubclass(jumpqueue.InvalidCallError, TypeError)


def test_public_api_import_uses_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import jumpqueue\n"
        "tops = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "outside = [t for t in tops if t not in sys.stdlib_module_names]\n"
        # __mp_main__ is multiprocessing's alias of __main__, not a package.
        "print(','.join(sorted(t for t in outside if t not in ('jumpqueue', '__mp_main__'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=20
    )
    assert out.stdout.strip() == ""


def test_public_api_integration_all_is_pinned_sorted_and_documented() -> None:
    assert integration.__all__ == INTEGRATION
    # Sorted as ruff's RUF022 keeps it: constants, then classes, then functions.
    assert integration.__all__ == sorted(
        INTEGRATION, key=lambda name: (not name.isupper(), not name[0].isupper(), name)
    )
    assert integration.__doc__
    for name in integration.__all__:
        assert f"`{name}" in integration.__doc__, f"the module docstring does not name {name}"
        value = getattr(integration, name)
        if callable(value):
            assert value.__doc__, f"{name} has no docstring"


def test_public_api_version_is_the_installed_distribution_version() -> None:
    assert jumpqueue.__version__ == importlib.metadata.version("jumpqueue")
