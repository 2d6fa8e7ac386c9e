"""The "After" code of docs/migration.md's recipes, run as the page shows it, and what it claims."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
import smtplib
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jumpqueue
from jumpqueue import WaitDeadlockError
from jumpqueue.integration import RequestScope
from jumpqueue.testing import immediate

PAGE = Path(__file__).resolve().parents[1] / "docs" / "migration.md"
_TESTED = re.compile(r"<!-- tested: (\w+) -->\n```python\n(.*?)```", re.DOTALL)


def recipe(name: str, **given: Any) -> Any:
    """Run the page's code marked `tested: name`, given what the application would define."""
    blocks = dict(_TESTED.findall(PAGE.read_text()))
    namespace: dict[str, Any] = {"__name__": f"migration_recipe_{name}", **given}
    exec(compile(blocks[name], f"{PAGE}:{name}", "exec"), namespace)  # noqa: S102 -- our own page
    return types.SimpleNamespace(**namespace)


@contextlib.contextmanager
def request(*, succeeded: bool = True) -> Iterator[None]:
    """A request as jumpqueue's middleware serves it: its calls are released when it ends."""
    scope = RequestScope()
    token = scope.activate()
    try:
        yield
    finally:
        scope.deactivate(token)
    scope.seal()
    scope.release(succeeded=succeeded)


@dataclasses.dataclass
class Order:
    id: int
    total: float = 0.0
    currency: str = "EUR"


class Receipts:
    """`send_receipt` of the application: records the ids it sent, and says when."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self._changed = threading.Condition()

    def send_receipt(self, order_id: int) -> None:
        with self._changed:
            self.sent.append(order_id)
            self._changed.notify_all()

    def wait(self, count: int) -> list[int]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.sent) >= count, 5)
            return list(self.sent)


def test_recipe_thread_sends_after_the_response_and_only_if_the_request_succeeded() -> None:
    receipts = Receipts()
    saved: list[Order] = []
    app = recipe("thread", save=saved.append, send_receipt=receipts.send_receipt)
    with request():
        app.place_order(Order(1))
        assert saved == [Order(1)]
        assert receipts.sent == []  # held until the response has been sent
    assert receipts.wait(1) == [1]
    with request(succeeded=False):
        app.place_order(Order(2))
    assert jumpqueue.stats().skipped == 1
    app.place_order(Order(3))  # outside a request: at once, as the thread ran
    assert receipts.wait(2) == [1, 3]


def test_recipe_executor_defers_what_it_forgot_and_submits_what_it_waits_for() -> None:
    receipts = Receipts()
    app = recipe(
        "executor",
        save=lambda order: None,
        send_receipt=receipts.send_receipt,
        fetch_rate={"EUR": 1.5, "USD": 1.0}.__getitem__,
    )
    with request():
        app.place_order(Order(4))
        assert app.quote(Order(5, total=10.0)) == 15.0  # runs now, inside the request
        assert receipts.sent == []
        held = jumpqueue.defer(app.fetch_rate, "USD")
        with pytest.raises(WaitDeadlockError):
            held.result(timeout=5)
    assert receipts.wait(1) == [4]
    assert held.result(timeout=5) == 1.0


def test_recipe_executor_a_wait_that_runs_out_raises_the_built_in_timeout_error() -> None:
    go = threading.Event()
    handle = jumpqueue.submit(go.wait, 5)
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.05)
    go.set()
    assert handle.result(timeout=5) is True  # the call went on


class Mailer:
    """`smtp_send` of the application: fails its first `failures` sends with `error`."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or smtplib.SMTPServerDisconnected("try again")
        self.tries: list[float] = []

    def smtp_send(self, to: str, subject: str, body: str) -> dict[str, Any]:
        self.tries.append(time.monotonic())
        if len(self.tries) <= self.failures:
            raise self.error
        return {}


def retries_recipe(mailer: Mailer) -> Any:
    return recipe("retries", smtp_send=mailer.smtp_send, make_code=lambda: "271828")


FORM = {"email": "a@example.com"}


def test_recipe_retries_three_attempts_one_second_apart_while_the_request_waits() -> None:
    mailer = Mailer(failures=2)
    app = retries_recipe(mailer)
    with request():
        app.reset_password(FORM)
    assert len(mailer.tries) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(mailer.tries)]
    assert all(1.0 <= gap < 1.5 for gap in gaps), gaps  # "fixed": 1 s, no jitter


def test_recipe_retries_raise_the_last_error_and_retry_only_what_the_loop_caught() -> None:
    mailer = Mailer(failures=3)
    app = retries_recipe(mailer)
    with request(), pytest.raises(smtplib.SMTPServerDisconnected):
        app.reset_password(FORM)
    assert len(mailer.tries) == 3
    mailer = Mailer(failures=1, error=ValueError("not an SMTP error"))
    app = retries_recipe(mailer)
    with request(), pytest.raises(ValueError, match="not an SMTP error"):
        app.reset_password(FORM)
    assert len(mailer.tries) == 1


def test_recipe_retries_deferred_send_runs_after_the_response_with_its_retries() -> None:
    # Under immediate(), as the page says for tests: the retry runs without its 1 s sleep.
    mailer = Mailer(failures=1)
    app = retries_recipe(mailer)
    with immediate() as calls:
        with request():
            app.contact(FORM)
            assert mailer.tries == []  # the response goes out first
        assert len(mailer.tries) == 2
        with request(succeeded=False):
            app.contact(FORM)
    assert [str(call.status) for call in calls] == ["succeeded", "skipped"]
    assert calls[0].deferred.attempts == 2
