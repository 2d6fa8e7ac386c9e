from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from jumpqueue._journal.records import make_record
from jumpqueue._journal.schema import PENDING
from jumpqueue._journal.store import Record, Store
from jumpqueue.cli import main

from .conftest import JournaledFactory
from .journal_helpers import RECORDER, eventually, never_known, records, remember, states

_OPTIONS = json.dumps(
    {"always": False, "executor": "thread", "retries": 0, "retry_backoff": 1.0, "timeout": None},
    sort_keys=True,
)


def _seed(path: Path, *planted: Record, sign: bool = True) -> None:
    # Write records as pending, signed with the journal's own key (as an attacker who
    # read the file could), or not.
    store = Store.open(str(path))
    try:
        with store.transaction() as connection:
            store.insert(list(planted), PENDING, None, None)
            if not sign:
                for record in planted:
                    connection.execute(
                        "UPDATE calls SET checksum = ? WHERE id = ?", (b"forged", record.id)
                    )
    finally:
        store.close()


def _known_record(call_id: str, value: object) -> Record:
    from jumpqueue import Deferred

    deferred: Deferred[object] = Deferred(
        remember.name, remember.fn, (value,), {}, remember.task_options, "thread", None
    )
    record = make_record(deferred, "json")
    record.id = call_id
    return record


def test_journal_record_naming_os_system_is_quarantined_not_run(
    make_journaled: JournaledFactory, journal_path: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    payload = json.dumps([[f"touch {marker}"], {}]).encode()
    make_journaled().open_journal()
    _seed(journal_path, Record("evil", "os.system", "json", payload, _OPTIONS, 3))
    runtime = make_journaled()
    assert runtime.open_journal()
    row = records(journal_path)["evil"]
    assert (row["state"], row["reason"]) == ("quarantined", "unknown")
    assert "os.system is not known" in row["error"]
    assert main(["retry", "--journal", str(journal_path), "evil"]) == 0
    again = make_journaled()
    assert again.open_journal()
    assert records(journal_path)["evil"]["state"] == "quarantined"
    assert not marker.exists()
    assert runtime.stats().recovered == again.stats().recovered == 0


def test_journal_tampered_arguments_fail_the_checksum_and_are_quarantined(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    make_journaled().open_journal()
    genuine = _known_record("genuine", "hello")
    tampered = _known_record("tampered", "hello")
    _seed(journal_path, genuine)
    _seed(journal_path, tampered, sign=False)
    runtime = make_journaled()
    assert runtime.open_journal()
    assert RECORDER.wait_for(1)
    row = records(journal_path)["tampered"]
    assert (row["state"], row["reason"]) == ("quarantined", "tampered")
    assert "checksum" in row["error"]
    assert RECORDER.values == ["hello"]


def test_journal_pickled_arguments_of_a_task_that_does_not_opt_in_are_never_unpickled(
    make_journaled: JournaledFactory, journal_path: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(((Exploit(),), {}))
    make_journaled().open_journal()
    _seed(journal_path, Record("pickled", remember.name, "pickle", payload, _OPTIONS, 3))
    runtime = make_journaled()
    assert runtime.open_journal()
    row = records(journal_path)["pickled"]
    assert (row["state"], row["reason"]) == ("quarantined", "tampered")
    assert "does not opt in" in row["error"]
    assert not marker.exists()


def test_journal_record_of_a_function_not_yet_known_runs_once_the_app_knows_it(
    make_journaled: JournaledFactory, journal_path: Path
) -> None:
    from jumpqueue import Deferred

    make_journaled().open_journal()
    deferred: Deferred[object] = Deferred(
        "tests.journal.journal_helpers.never_known",
        never_known,
        ("early",),
        {},
        remember.task_options,
        "thread",
        None,
    )
    # Encoded by name, as the process that deferred it did; not registered in this one.
    record = Record(
        "waiting",
        deferred.name,
        "json",
        json.dumps([["early"], {}]).encode(),
        _OPTIONS,
        3,
    )
    _seed(journal_path, record)
    runtime = make_journaled()
    assert runtime.open_journal()
    assert records(journal_path)["waiting"]["state"] == "quarantined"
    assert runtime.defer(never_known, "now known").result(5) == "now known"
    assert eventually(lambda: ("never_known", "early") in RECORDER.values)
    assert states(journal_path).get("quarantined", 0) == 0
