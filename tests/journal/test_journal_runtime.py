from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import jumpqueue
from jumpqueue import Config, InvalidCallError, Runtime, Status
from jumpqueue._journal import Journal
from jumpqueue._journal.owner import Owner, current_owner, this_node
from jumpqueue._journal.records import make_record
from jumpqueue._journal.schema import CLAIMED, PENDING
from jumpqueue._journal.store import Record, Store
from jumpqueue.integration import RequestScope

from .conftest import JournaledFactory
from .journal_helpers import (
    RECORDER,
    always_fails,
    connect,
    eventually,
    plain_remember,
    records,
    remember,
    remember_after_gate,
    remember_pickled,
    states,
)


def _flush(runtime: Runtime) -> None:
    journal = runtime._journaling.journal
    assert journal is not None
    assert journal.flush()


def test_journal_call_is_on_disk_before_defer_returns(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    runtime = make_journaled()
    RECORDER.gate.clear()
    deferred = runtime.defer(remember_after_gate, "a")
    row = records(journal_path)[deferred.id]
    assert row["state"] == CLAIMED
    assert Owner.parse(row["owner"]) == current_owner()
    assert row["name"] == "tests.journal.journal_helpers.remember_after_gate"
    RECORDER.gate.set()
    assert deferred.result(5) == "a"
    _flush(runtime)
    row = records(journal_path)[deferred.id]
    assert (row["state"], row["attempts"], row["error"]) == ("done", 1, None)


def test_journal_failed_call_is_kept_with_its_error_and_attempts(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    runtime = make_journaled()
    deferred = runtime.defer(always_fails, 7)
    assert isinstance(deferred.exception(5), ValueError)
    _flush(runtime)
    row = records(journal_path)[deferred.id]
    assert (row["state"], row["attempts"]) == ("failed", 3)
    assert "ValueError: no good: 7" in row["error"]
    assert "Traceback" in row["error"]


def test_journal_request_group_commit_writes_its_calls_in_one_transaction_at_seal(
    make_journaled: JournaledFactory, journal_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_journaled()
    inserts: list[int] = []
    real_insert = Store.insert

    def counting_insert(self: Store, batch: list[Record], *args: Any) -> None:
        inserts.append(len(batch))
        real_insert(self, batch, *args)

    monkeypatch.setattr(Store, "insert", counting_insert)
    scope = RequestScope()
    token = scope.activate()
    handles = [runtime.defer(remember, n) for n in range(10)]
    scope.deactivate(token)
    assert all(handle.status is Status.HELD for handle in handles)
    assert not journal_path.exists() or not states(journal_path)
    scope.seal()
    assert inserts == [10]
    assert states(journal_path) == {CLAIMED: 10}
    scope.seal()  # nothing new: nothing written
    assert inserts == [10]
    scope.release(succeeded=True)
    assert [handle.result(5) for handle in handles] == list(range(10))
    _flush(runtime)
    assert states(journal_path) == {"done": 10}


def test_journal_concurrent_calls_outside_requests_share_transactions(
    make_journaled: JournaledFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_journaled(max_pending=10_000)
    transactions: list[int] = []
    real_insert = Store.insert

    def counting_insert(self: Store, batch: list[Record], *args: Any) -> None:
        transactions.append(len(batch))
        real_insert(self, batch, *args)

    monkeypatch.setattr(Store, "insert", counting_insert)
    start = threading.Barrier(8)

    def caller() -> None:
        start.wait(5)
        for n in range(25):
            runtime.defer(remember, n)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sum(transactions) == 200
    assert len(transactions) < 200  # callers of the same moment share a commit
    assert RECORDER.wait_for(200)


def test_journal_release_seals_first_when_the_web_layer_did_not(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    runtime = make_journaled()
    RECORDER.gate.clear()
    scope = RequestScope()
    token = scope.activate()
    handle = runtime.defer(remember_after_gate, "late")
    scope.deactivate(token)
    scope.release(succeeded=True)
    assert records(journal_path)[handle.id]["state"] == CLAIMED
    RECORDER.gate.set()
    assert handle.result(5) == "late"


def test_journal_failed_request_skips_its_calls_and_writes_only_what_runs_anyway(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    runtime = make_journaled()
    sealed = RequestScope()
    token = sealed.activate()
    skipped = runtime.defer(remember, "sealed then skipped")
    sealed.deactivate(token)
    sealed.seal()
    sealed.release(succeeded=False)
    unsealed = RequestScope()
    token = unsealed.activate()
    never_written = runtime.defer(remember, "never written")
    always = runtime.defer(remember.options(always=True), "runs anyway")
    unsealed.deactivate(token)
    unsealed.release(succeeded=False)
    assert always.result(5) == "runs anyway"
    assert skipped.status is Status.SKIPPED
    assert never_written.status is Status.SKIPPED
    _flush(runtime)
    rows = records(journal_path)
    assert rows[skipped.id]["state"] == "skipped"
    assert never_written.id not in rows
    assert rows[always.id]["state"] == "done"


def test_journal_shutdown_leaves_unfinished_calls_for_the_next_runtime(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    first = make_journaled(max_workers=1)
    RECORDER.gate.clear()
    handles = [first.defer(remember_after_gate, n) for n in range(5)]
    assert eventually(lambda: first.stats().running == 1)
    first.shutdown(timeout=0.1)
    assert {handle.status for handle in handles} == {Status.JOURNALED}
    stats = first.stats()
    assert (stats.journaled, stats.abandoned, stats.submitted) == (5, 0, 5)
    assert stats.submitted == stats.finished + stats.in_flight
    with pytest.raises(jumpqueue.TaskNotRunError, match="journaled"):
        handles[0].result(0)
    # The running call keeps its owner (this process lives); the others are released.
    assert states(journal_path) == {PENDING: 4, CLAIMED: 1}
    second = make_journaled()
    assert second.open_journal()
    RECORDER.gate.set()
    assert RECORDER.wait_for(5)  # 4 taken up by the second runtime, 1 the first's late thread
    stats = second.stats()
    assert (stats.recovered, stats.submitted) == (4, 4)  # new calls to the second runtime
    assert sorted(RECORDER.values) == [0, 1, 2, 3, 4]


def test_journal_takes_up_records_of_dead_owners_and_expired_leases_only(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = Owner(int(gone.stdout), this_node(), "1")
    elsewhere = Owner(1, "another-host/0123456789ab", "")
    seeding = make_journaled()
    seeding.open_journal()
    seeding.shutdown()
    store = Store.open(str(journal_path))
    plan = {
        "of-dead": (dead, time.time() + 3600),
        "expired-elsewhere": (elsewhere, time.time() - 1),
        "leased-elsewhere": (elsewhere, time.time() + 3600),
        "of-the-living": (current_owner(), time.time() - 1),
    }
    with store.transaction():
        for value, (owner, lease_until) in plan.items():
            record = _record(value, remember)
            store.insert([record], CLAIMED, owner, lease_until)
    store.close()
    runtime = make_journaled()
    assert runtime.open_journal()
    assert RECORDER.wait_for(2)
    _flush(runtime)
    assert sorted(RECORDER.values) == ["expired-elsewhere", "of-dead"]
    rows = records(journal_path)
    assert rows["of-dead"]["recoveries"] == 1
    assert rows["leased-elsewhere"]["state"] == CLAIMED
    assert rows["of-the-living"]["state"] == CLAIMED
    assert runtime.stats().recovered == 2


def _record(call_id: str, task: jumpqueue.Task[..., Any], *args: Any) -> Record:
    # A record as a runtime would write it for task(*args), with call_id as its id.
    deferred: jumpqueue.Deferred[Any] = jumpqueue.Deferred(
        task.name, task.fn, args or (call_id,), {}, task.task_options, "thread", None
    )
    record = make_record(deferred, "json")
    record.id = call_id
    return record


def test_journal_refuses_at_defer_what_it_could_not_run_later(
    make_journaled: JournaledFactory, tmp_path: Path
) -> None:
    runtime = make_journaled()

    def closure() -> None:
        pass

    with pytest.raises(InvalidCallError, match="lambda"):
        runtime.defer(lambda: None)
    with pytest.raises(InvalidCallError, match="closure"):
        runtime.defer(closure)
    with pytest.raises(InvalidCallError, match=r"args\[0\] is a object.*pickle"):
        runtime.defer(remember, object())
    assert runtime.stats().submitted == 0
    plain = Runtime(Config())
    assert plain.defer(lambda: 42).result(5) == 42  # without a journal: no such rule, no disk
    plain.shutdown()
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_journal_pickle_only_when_the_task_or_the_runtime_opts_in(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    by_task = make_journaled()
    handle = by_task.defer(remember_pickled, {1, 2})
    assert handle.result(5) == {1, 2}
    assert records(journal_path)[handle.id]["serializer"] == "pickle"
    everywhere = make_journaled(serializer="pickle", journal=str(journal_path) + "2")
    assert everywhere.defer(plain_remember, {3}).result(5) == {3}


def test_journal_names_plain_functions_by_import_path(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    runtime = make_journaled()
    handle = runtime.defer(plain_remember, [1, "two"])
    assert handle.result(5) == [1, "two"]
    row = records(journal_path)[handle.id]
    assert row["name"] == "tests.journal.journal_helpers.plain_remember"
    assert bytes(row["payload"]) == b'[[[1,"two"]],{}]'


def test_journal_prunes_done_records_after_retention_and_keeps_failed_ones(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    runtime = make_journaled(journal_retention=0.2)
    done = runtime.defer(remember, 1)
    failed = runtime.defer(always_fails.options(retries=0), 2)
    done.wait(5)
    failed.wait(5)
    _flush(runtime)
    assert eventually(lambda: done.id not in records(journal_path))
    assert records(journal_path)[failed.id]["state"] == "failed"


def test_journal_survives_fork_each_process_with_its_own_connection(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    runtime = make_journaled()
    assert runtime.defer(remember, "parent before").result(5) == "parent before"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking a threaded process
        pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child reports through its exit status
        code = 1
        try:
            from jumpqueue._journal import file as _journal_file

            inherited = len(_journal_file._inherited) >= 1 and not _journal_file._connections
            ok = runtime.defer(remember, "child").result(5) == "child"
            journal = runtime._journaling.journal
            code = 0 if inherited and ok and journal is not None and journal.flush() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert runtime.defer(remember, "parent after").result(5) == "parent after"
    _flush(runtime)
    with contextlib.closing(connect(journal_path)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    owners = {Owner.parse(row["owner"]) for row in records(journal_path).values()}
    assert {owner.pid for owner in owners if owner} == {os.getpid(), pid}
    assert states(journal_path) == {"done": 3}


def test_journal_is_never_opened_before_first_use(tmp_path: Path) -> None:
    path = tmp_path / "lazy" / "journal.db"
    runtime = Runtime(Config(journal=str(path)))
    assert isinstance(runtime._journaling.journal, Journal)
    assert not path.parent.exists()
    runtime.shutdown()
    assert not path.parent.exists()


def test_journal_commit_that_gives_up_is_never_written_later(
    make_journaled: JournaledFactory, journal_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jumpqueue._journal import writer

    monkeypatch.setattr(writer, "COMMIT_WAIT", 0.05)
    runtime = make_journaled(max_workers=1)
    assert runtime.open_journal()
    journal = runtime._journaling.journal
    assert journal is not None
    assert journal._writer.turn.acquire(timeout=5)  # a writer round slower than COMMIT_WAIT
    try:
        handle = runtime.defer(remember, "late")
    finally:
        journal._writer.turn.release()
    assert handle.result(timeout=5) == "late"  # it ran without the journal
    assert runtime.stats().journal_fallbacks == 1
    assert journal.flush()
    assert handle.id not in records(journal_path)
