from __future__ import annotations

import math
import threading
from typing import Any

import pytest

import jumpqueue
from jumpqueue import Config, ConfigurationError, TaskTimeoutError, task

from .conftest import RuntimeFactory


def test_config_defaults_work_without_configuration() -> None:
    config = Config()
    assert config.max_workers >= 1
    assert config.on_overload == "wait"
    assert config.task_timeout is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_workers", 0),
        ("max_workers", -1),
        ("max_workers", 1.5),
        ("max_workers", True),
        ("max_async", 0),
        ("max_pending", 0),
        ("max_stuck_threads", -1),
        ("overload_wait", -0.1),
        ("overload_wait", float("nan")),
        ("task_timeout", 0),
        ("task_timeout", -5),
        ("task_timeout", "10"),
        ("shutdown_timeout", -1),
        ("shutdown_timeout", float("inf")),
        ("on_overload", "explode"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=field):
        Config(**{field: value})


def test_config_unknown_option_is_named() -> None:
    with pytest.raises(ConfigurationError, match="max_wrokers"):
        Config.build(max_wrokers=3)
    with pytest.raises(ConfigurationError, match="max_wrokers"):
        jumpqueue.configure(max_wrokers=3)  # type: ignore[call-arg]


def test_config_from_env_reads_prefixed_variables() -> None:
    config = Config.from_env(
        {
            "JUMPQUEUE_MAX_WORKERS": "3",
            "JUMPQUEUE_OVERLOAD_WAIT": "0.25",
            "JUMPQUEUE_TASK_TIMEOUT": "none",
            "JUMPQUEUE_ON_OVERLOAD": "drop",
            "UNRELATED": "x",
        }
    )
    assert config.max_workers == 3
    assert config.overload_wait == 0.25
    assert config.task_timeout is None
    assert config.on_overload == "drop"
    assert Config.from_env({"JUMPQUEUE_TASK_TIMEOUT": "2.5"}).task_timeout == 2.5


def test_config_from_env_warns_of_unknown_variables_naming_the_closest_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.warns(UserWarning, match="JUMPQUEUE_MAX_WORKER is not .* JUMPQUEUE_MAX_WORKERS"):
        config = Config.from_env({"JUMPQUEUE_MAX_WORKER": "3", "JUMPQUEUE_MAX_PENDING": "9"})
    assert (config.max_workers, config.max_pending) == (Config().max_workers, 9)
    with pytest.warns(UserWarning, match="JUMPQUEUE_ZZZ is not a jumpqueue option") as caught:
        Config.from_env({"JUMPQUEUE_ZZZ": "1"})
    assert "did you mean" not in str(caught[0].message)
    monkeypatch.setenv("JUMPQUEUE_ONOVERLOAD", "drop")
    with pytest.warns(UserWarning, match="did you mean JUMPQUEUE_ON_OVERLOAD"):
        jumpqueue.configure()


def test_config_task_timeout_inf_means_no_limit_as_a_task_timeout_of_inf(
    make_runtime: RuntimeFactory,
) -> None:
    assert Config.from_env({"JUMPQUEUE_TASK_TIMEOUT": "inf"}).task_timeout == math.inf
    runtime = make_runtime(task_timeout=math.inf, max_stuck_threads=2)
    release = threading.Event()
    unlimited = runtime.defer(release.wait, 10)
    limited = runtime.defer(task(release.wait).options(timeout=0.05), 10)
    assert isinstance(limited.exception(timeout=5), TaskTimeoutError)
    assert not unlimited.done()
    release.set()
    assert unlimited.result(timeout=5) is True
    with pytest.raises(ConfigurationError, match="task_timeout"):
        Config.from_env({"JUMPQUEUE_TASK_TIMEOUT": "-inf"})


def test_config_keyword_overrides_beat_the_environment() -> None:
    config = Config.from_env({"JUMPQUEUE_MAX_WORKERS": "3"}, max_workers=5)
    assert config.max_workers == 5


def test_config_from_env_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="JUMPQUEUE_MAX_WORKERS"):
        Config.from_env({"JUMPQUEUE_MAX_WORKERS": "many"})
    with pytest.raises(ConfigurationError, match="on_overload"):
        Config.from_env({"JUMPQUEUE_ON_OVERLOAD": "nope"})


def test_config_from_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUMPQUEUE_MAX_PENDING", "7")
    assert Config.from_env().max_pending == 7
    runtime = jumpqueue.configure()
    assert runtime.config.max_pending == 7


def test_config_replace_validates() -> None:
    config = Config().replace(max_workers=2)
    assert config.max_workers == 2
    with pytest.raises(ConfigurationError, match="max_workers"):
        config.replace(max_workers=0)


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.max_workers = 3  # type: ignore[misc]
