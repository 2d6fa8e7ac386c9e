"""Framework settings applied to the default runtime, spelt as the `JUMPQUEUE_*` variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jumpqueue import Config, ConfigurationError, configure, get_runtime

#: Settings of the web layer itself; every other name is a `Config` field.
WEB_SETTINGS = ("overload_response",)


def apply_settings(settings: Mapping[str, object], *, source: str) -> dict[str, object]:
    """Configure the default runtime from framework settings; return the web-layer ones.

    Names are matched without regard to case (`MAX_WORKERS` is `max_workers`);
    settings given here win over `JUMPQUEUE_*` environment variables. The default
    runtime is replaced only if the configuration differs, so that building the
    application twice in one process does not drain it.

    Raises:
        ConfigurationError: a name is unknown or a value out of range; the message
            says where the setting came from.
    """
    options: dict[str, Any] = {str(name).lower(): value for name, value in settings.items()}
    web = {name: options.pop(name) for name in WEB_SETTINGS if name in options}
    for name, value in web.items():
        if not isinstance(value, bool):
            raise ConfigurationError(f"{source}: {name} must be a bool, not {value!r}")
    if options:
        try:
            config = Config.from_env(**options)
        except ConfigurationError as error:
            raise ConfigurationError(f"{source}: {error}") from None
        if get_runtime().config != config:
            configure(config)
    return web
