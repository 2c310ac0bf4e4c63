"""The API reference (pdoc, ADR 0018) builds from the public surface's docstrings, and every
cross-reference in them resolves.

pdoc links a backticked name it can resolve (`opspilot.OpsPilot`, `OpsPilot.alerts`) and
leaves any other as plain code, silently. Here a plain code span that names `opspilot.…` or
starts with a public name is a broken reference, and fails the build. The same command
writes the reference for reading: `pdoc --docformat markdown --no-show-source -o build/api
opspilot '!opspilot.'` (build/ is git-ignored).
"""

from __future__ import annotations

import html
import re
import warnings
from pathlib import Path

import pdoc
import pdoc.render

import opspilot

# Named in the package docstring as internal, on purpose not documented.
INTERNAL = {f"opspilot.{name}" for name in
            ("adapters", "application", "container", "domain", "entrypoints", "settings")}
_PLAIN_CODE = re.compile(r"<code>([^<]+)</code>")


def unresolved(page: str) -> list[str]:
    """Code spans that look like references to the public surface but are not links."""
    broken = []
    for raw in _PLAIN_CODE.findall(page):
        text = html.unescape(raw).removesuffix("()")
        if text in INTERNAL:
            continue
        if text.startswith("opspilot.") or text.split(".")[0] in opspilot.__all__:
            broken.append(text)
    return broken


def build_reference(out: Path) -> str:
    pdoc.render.configure(docformat="markdown", show_source=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pdoc warns on what it cannot read or resolve
        pdoc.pdoc("opspilot", "!opspilot.", output_directory=out)
    return (out / "opspilot.html").read_text()


def test_the_reference_builds_with_every_reference_resolved(tmp_path: Path) -> None:
    page = build_reference(tmp_path)
    assert unresolved(page) == []
    for name in opspilot.__all__:  # every public name has its own entry
        assert f'id="{name}"' in page, name


def test_a_broken_reference_is_caught() -> None:
    page = ('<code><a href="#OpsPilot">OpsPilot</a></code> <code>opspilot.Nope</code> '
            "<code>OpsPilot.no_such_method()</code> <code>opspilot.domain</code> <code>x.y</code>")
    assert unresolved(page) == ["opspilot.Nope", "OpsPilot.no_such_method"]
