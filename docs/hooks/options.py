"""MkDocs hook: the options page, generated from `jumpqueue.Config`: fields, docstring, checks.

`reference/options.md` holds the markers `<!-- options-table -->` and
`<!-- /options-table -->`, around a note for readers of the bare file; this
hook puts there one row per `Config` field: its `JUMPQUEUE_<NAME>` variable, its default,
the values `Config` accepts (found by asking `Config` itself) and the field's
`Args:` entry in the `Config` docstring. A field without an entry fails the build.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from collections.abc import Callable
from typing import Any

import jumpqueue
from jumpqueue import _choices
from jumpqueue._config import ENV_PREFIX

MARKER = "<!-- options-table -->"
_BLOCK = re.compile(r"<!-- options-table -->.*?<!-- /options-table -->", re.DOTALL)
PAGE = "reference/options.md"
#: How far the search for an int's or a float's bounds looks.
_FAR = 2**40
_DAY = 24 * 3600


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace the marker on the options page with the generated table."""
    if page.file.src_uri != PAGE:
        return markdown
    if not _BLOCK.search(markdown):
        raise ValueError(f"{PAGE} lost its {MARKER} ... <!-- /options-table --> markers")
    return _BLOCK.sub(lambda _: options_table(), markdown)


def options_table() -> str:
    """The Markdown table of every `Config` field."""
    meanings = docstring_args(jumpqueue.Config)
    rows = [
        "| option | environment variable | default | accepts | meaning |",
        "|---|---|---|---|---|",
    ]
    for field in dataclasses.fields(jumpqueue.Config):
        if field.name not in meanings:
            raise ValueError(f"Config.{field.name} has no Args: entry in the Config docstring")
        meaning = meanings[field.name].replace("|", "\\|")
        rows.append(
            f"| `{field.name}` | `{env_name(field.name)}` | {_default(field)} "
            f"| {accepted_values(field)} | {meaning} |"
        )
    return "\n".join(rows)


def env_name(name: str) -> str:
    """The environment variable that sets option `name`."""
    return ENV_PREFIX + name.upper()


def docstring_args(cls: type) -> dict[str, str]:
    """The `Args:` entries of a Google-style docstring, each joined on one line."""
    doc = inspect.getdoc(cls) or ""
    section = re.search(r"^Args:\n(.*?)(?=^\S|\Z)", doc, re.MULTILINE | re.DOTALL)
    entries: dict[str, str] = {}
    if section is None:
        return entries
    name = ""
    for line in section[1].splitlines():
        entry = re.match(r"^    (\w+): (.*)$", line)
        if entry:
            name = entry[1]
            entries[name] = entry[2]
        elif name and line.strip():
            entries[name] += " " + line.strip()
    return entries


def _default(field: dataclasses.Field[Any]) -> str:
    value = field.default
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, float) and value >= _DAY and value % _DAY == 0:
        return f"`{value!r}` ({int(value // _DAY)} days)"
    return f"`{value!r}`"


def accepted_values(field: dataclasses.Field[Any]) -> str:
    """What `Config` accepts for a field, found by asking it."""
    kinds = [kind.strip() for kind in str(field.type).split("|")]
    accepts = _accepts(field.name)
    parts: list[str] = []
    choices = [arg for kind in kinds for arg in _literal_args(kind)]
    if choices:
        parts.append(", ".join(f'`"{choice}"`' for choice in choices))
    elif "bool" in kinds:
        parts.append("`true`, `false`")
    elif "int" in kinds:
        parts.append(_int_range(accepts, field.default))
    elif "float" in kinds:
        parts.append(_float_range(accepts, field.default))
    elif "str" in kinds:
        parts.append("text")
    if "None" in kinds and accepts(None):
        parts.append("none")
    return "; ".join(part for part in parts if part)


def _accepts(name: str) -> Callable[[Any], bool]:
    def accepts(value: Any) -> bool:
        try:
            jumpqueue.Config.build(**{name: value})
        except jumpqueue.ConfigurationError:
            return False
        return True

    return accepts


def _literal_args(kind: str) -> tuple[str, ...]:
    alias = getattr(_choices, kind, None)
    if typing.get_origin(alias) is typing.Literal:
        return typing.get_args(alias)
    return ()


def _int_range(accepts: Callable[[Any], bool], default: object) -> str:
    start = (
        default
        if isinstance(default, int)
        else next((n for n in (1, 0, 2**24, -1) if accepts(n)), None)
    )
    if start is None:
        return "int"
    low = None if accepts(-_FAR) else _edge(accepts, -_FAR, start)
    high = None if accepts(_FAR) else _edge(accepts, _FAR, start)
    return _bounds(low, high)


def _edge(accepts: Callable[[Any], bool], rejected: int, accepted: int) -> int:
    # Bisect between a value Config rejects and one it accepts: the last accepted.
    while abs(rejected - accepted) > 1:
        middle = (rejected + accepted) // 2
        if accepts(middle):
            accepted = middle
        else:
            rejected = middle
    return accepted


def _float_range(accepts: Callable[[Any], bool], default: object) -> str:
    if accepts(0.0):
        low = "≥ 0"
    elif accepts(1e-9):
        low = "> 0"
    else:
        start = float(default) if isinstance(default, (int, float)) else 1.0
        low = f"≥ {_edge(lambda ms: accepts(ms / 1000), 0, int(start * 1000)) / 1000:g}"
    text = f"{low} seconds"
    if accepts(math.inf):
        text += ", or `inf`"
    return text


def _bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"≥ {_size(low)}"
    if high is not None:
        return f"≤ {high}"
    return "any int"


def _size(number: int) -> str:
    if number >= 1024**2 and number % 1024**2 == 0:
        return f"{number} ({number // 1024**2} MiB)"
    return str(number)
