"""MkDocs hook: a page quotes README.md's sections and the examples' READMEs, written once.

A line `--8<-- "README.md:NAME"` on a page is replaced by the README's lines
between `<!-- --8<-- [start:NAME] -->` and `<!-- --8<-- [end:NAME] -->` (the
markers of pymdownx.snippets). Links and images in README.md point into
`docs/` (`docs/img/plot.png`, `docs/servers.md`) so that they work on the
repository's front page; on the site they are made relative to the quoting
page, so the same section builds, and is link-checked, in both places. A
link to a README section that the site has as a page of its own
(`#measured`) goes to that page.

A line `--8<-- "examples/NAME/README.md"` is replaced by that README with its
headings one level down, so that one page can hold them all.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"
_QUOTE = re.compile(r'^--8<-- "README\.md:(\w+)"$', re.MULTILINE)
_EXAMPLE = re.compile(r'^--8<-- "(examples/\w+/README\.md)"$', re.MULTILINE)
_DOCS_LINK = re.compile(r"(\]\(|src=\")docs/([^)\"\s]+)")
#: README sections that are pages of the site.
_SECTION_PAGES = {"#measured": "measured.md"}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Expand each README section the page quotes."""
    page_dir = posixpath.dirname(page.file.src_uri)

    def quote(match: re.Match[str]) -> str:
        text = readme_section(match[1])
        for anchor, target in _SECTION_PAGES.items():
            text = text.replace(f"]({anchor})", f"](docs/{target})")
        return _DOCS_LINK.sub(
            lambda link: link[1] + posixpath.relpath(link[2], page_dir or "."), text
        )

    def example(match: re.Match[str]) -> str:
        return demoted((README.parent / match[1]).read_text())

    return _EXAMPLE.sub(example, _QUOTE.sub(quote, markdown))


def readme_section(name: str) -> str:
    """The lines of README.md between the snippet markers of section `name`."""
    text = README.read_text()
    found = re.search(
        rf"^<!-- --8<-- \[start:{name}\] -->\n(.*?)^<!-- --8<-- \[end:{name}\] -->$",
        text,
        re.MULTILINE | re.DOTALL,
    )
    if found is None:
        raise ValueError(f"README.md has no section marked {name!r}")
    return found[1]


def demoted(text: str) -> str:
    """Markdown with every heading one level down (a `#` in a code block is no heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(lines) + "\n"
