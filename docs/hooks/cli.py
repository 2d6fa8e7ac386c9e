"""MkDocs hook: the command-line page, from the `jumpqueue` command's own `--help`."""

from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Any

from jumpqueue.cli import main

MARKER = "<!-- cli-help -->"
_BLOCK = re.compile(r"<!-- cli-help -->.*?<!-- /cli-help -->", re.DOTALL)
PAGE = "reference/cli.md"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace the marker on the command-line page with each command's help."""
    if page.file.src_uri != PAGE:
        return markdown
    if not _BLOCK.search(markdown):
        raise ValueError(f"{PAGE} lost its {MARKER} ... <!-- /cli-help --> markers")
    overview = help_text([])
    commands = re.search(r"\{([\w,-]+)\}", overview)
    if commands is None:
        raise ValueError(f"no commands in `jumpqueue --help`:\n{overview}")
    sections = [f"```text\n{overview}```"]
    sections += [
        f"## `jumpqueue {command}`\n\n```text\n{help_text([command])}```"
        for command in commands[1].split(",")
    ]
    return _BLOCK.sub(lambda _: "\n\n".join(sections), markdown)


def help_text(command: list[str]) -> str:
    """What `jumpqueue COMMAND --help` prints, 88 columns wide."""
    output = io.StringIO()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    try:
        with contextlib.redirect_stdout(output), contextlib.suppress(SystemExit):
            main([*command, "--help"])
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return output.getvalue()
