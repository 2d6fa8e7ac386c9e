"""The documentation site's generated pages: every option from the code, and no copy of them."""

from __future__ import annotations

import dataclasses
import importlib.util
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import jumpqueue

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / "docs" / "hooks"
FIELDS = [field.name for field in dataclasses.fields(jumpqueue.Config)]


def hook(name: str) -> ModuleType:
    """A module of docs/hooks/, imported as MkDocs imports it: by its path."""
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", HOOKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_options_page_lists_every_config_field_with_its_variable_and_meaning() -> None:
    options = hook("options")
    rows = options.options_table().splitlines()[2:]
    assert [row.split(" | ")[0].strip("| `") for row in rows] == FIELDS
    meanings = options.docstring_args(jumpqueue.Config)
    for name, row in zip(FIELDS, rows, strict=True):
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert cells[1] == f"`JUMPQUEUE_{name.upper()}`"
        assert cells[3], f"{name}: no accepted values"
        assert cells[4] == meanings[name].replace("|", "\\|")
    page = (ROOT / "docs" / "reference" / "options.md").read_text()
    assert options.MARKER in page
    rendered = options.on_page_markdown(page, page=_Page("reference/options.md"))
    assert "| `max_workers` | `JUMPQUEUE_MAX_WORKERS` | `8` | ≥ 1 |" in rendered
    assert '| `on_overload` | `JUMPQUEUE_ON_OVERLOAD` | `"wait"` |' in rendered


def test_docs_reference_documents_every_public_module() -> None:
    # The command line has a page of its own; the demo and the executors are not an API.
    internal = ("jumpqueue.cli", "jumpqueue.demo", "jumpqueue.executors")
    public = [
        module.name
        for module in pkgutil.walk_packages(jumpqueue.__path__, "jumpqueue.")
        if not any(part.startswith("_") for part in module.name.split("."))
        and not module.name.startswith(internal)
        and module.name != "jumpqueue.contrib"  # a namespace for the modules below it
    ]
    reference = (ROOT / "docs" / "reference" / "integration.md").read_text()
    documented = re.findall(r"^::: (\S+)$", reference, re.MULTILINE)
    assert sorted(documented) == sorted(public)
    assert "::: jumpqueue\n" in (ROOT / "docs" / "reference" / "api.md").read_text()


def test_docs_no_hand_written_copy_of_the_options_table_remains() -> None:
    # A table row that starts with an option's name is a copy of the generated table.
    row = re.compile(r"^\|\s*`(\w+)`\s*\|", re.MULTILINE)
    pages = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("examples/**/*.md")]
    for page in pages:
        copied = {name for name in row.findall(page.read_text()) if name in FIELDS}
        assert len(copied) < 3, f"{page.relative_to(ROOT)} copies the options table: {copied}"
    readme = (ROOT / "README.md").read_text()
    assert "(docs/reference/options.md)" in readme


def test_docs_readme_sections_the_site_quotes_are_marked_once() -> None:
    readme_hook = hook("readme")
    readme = (ROOT / "README.md").read_text()
    for name in ("intro", "comparison", "measured"):
        assert readme.count(f"<!-- --8<-- [start:{name}] -->") == 1, name
        assert readme_hook.readme_section(name).strip(), name
    # The whole Measured section is quoted: rows added to it reach the site.
    measured = readme.split("\n## Measured\n", 1)[1].split("\n## ", 1)[0]
    assert readme_hook.readme_section("measured").strip() in measured
    assert measured.strip().startswith("<!-- --8<-- [start:measured] -->")
    assert measured.strip().endswith("<!-- --8<-- [end:measured] -->")


def test_docs_readme_links_into_docs_become_the_sites_links() -> None:
    readme_hook = hook("readme")
    page = '--8<-- "README.md:comparison"\n'
    rendered = readme_hook.on_page_markdown(page, page=_Page("guides/page.md"))
    assert "](../migration.md#from-the-local-pool-to-rq-or-celery)" in rendered
    assert "](../measured.md)" in rendered  # the README's own #measured section
    assert "](docs/" not in rendered
    measured = readme_hook.on_page_markdown(
        '--8<-- "README.md:measured"', page=_Page("measured.md")
    )
    assert "](img/overload-policies.png)" in measured
    assert "](how-it-works/overload.md)" in measured
    assert readme_hook.demoted("# A\n```sh\n# a comment\n```\n## B") == (
        "## A\n```sh\n# a comment\n```\n### B\n"
    )


@dataclasses.dataclass
class _File:
    src_uri: str


class _Page:
    """What the hooks read of an MkDocs page: its file's path under docs/."""

    def __init__(self, src_uri: str) -> None:
        self.file = _File(src_uri)
