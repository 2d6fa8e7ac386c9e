"""Where an enqueued call waits: its `task_enqueued` signal, its transaction, its request."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from django.db import transaction

from jumpqueue.integration import RequestScope, current_scope

if TYPE_CHECKING:
    from jumpqueue import Deferred


def release_on_commit(scope: EnqueueScope, using: str | None) -> None:
    """Release the scope's calls now, or when the transaction open on `using` commits.

    Outside an atomic block (or with `using` None) they are released at once.
    Inside one they wait for the outermost transaction to commit; if it (or the
    savepoint they were enqueued in) rolls back, they are skipped, as a failed
    request's calls are: only tasks whose queue says `ALWAYS` run.
    """
    if using is None or not transaction.get_connection(using).in_atomic_block:
        scope.commit()
        return
    committed = _Committed(scope)
    # Django drops the callbacks of a rolled-back transaction or savepoint without a
    # word: the callback's end (at once, by reference counting) is the rollback's sign.
    weakref.finalize(committed, scope.roll_back)
    transaction.on_commit(committed, using=using)


class _Committed:
    """The `on_commit` callback: an object, so that its end can be watched."""

    def __init__(self, scope: EnqueueScope) -> None:
        self.scope = scope

    def __call__(self) -> None:
        self.scope.commit()


class EnqueueScope(RequestScope):
    """Holds the call of one `enqueue()` until its signal was sent and its transaction committed.

    Then it goes to the scope of the request that enqueued it (`request`), held
    until the response has been sent, or it runs if there is none (or the
    response has been sent already).
    """

    def __init__(self) -> None:
        super().__init__()
        self._request = current_scope()
        self._calls: list[tuple[Any, Deferred[Any]]] = []
        self._done = False

    @property
    def released(self) -> bool:
        """True once its calls were let go, or skipped."""
        return self._done

    def hold(self, host: Any, deferred: Deferred[Any]) -> bool:
        """Keep a call until `commit()` or `roll_back()`."""
        if self._done:
            return False
        self._calls.append((host, deferred))
        return True

    def commit(self) -> None:
        """Hand the calls to the request's scope, or run them."""
        for host, deferred in self._take():
            request = self._request
            if request is not None and not request.released and request.hold(host, deferred):
                continue  # released with the request's response
            host.seal_held([deferred])
            host.release_held(deferred, run=True)

    def roll_back(self) -> None:
        """Skip the calls (a rollback, a failed enqueue), except `always` ones."""
        for host, deferred in self._take():
            always = deferred.options.always
            if always:
                host.seal_held([deferred])
            host.release_held(deferred, run=always)

    def _take(self) -> list[tuple[Any, Deferred[Any]]]:
        if self._done:
            return []
        self._done = True
        calls, self._calls = self._calls, []
        return calls
