"""The CLI reference in docs/ is generated from the CLI and kept current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "gen_docs", ROOT / "scripts" / "gen_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_and_option_has_help() -> None:
    assert _generator().undocumented() == []


def test_cli_reference_is_current() -> None:
    generated = _generator().render()
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == generated, "run python scripts/gen_docs.py"


def test_capability_matrix_is_current() -> None:
    generator = _generator()
    document = (ROOT / "docs" / "formats.md").read_text()
    assert generator.with_matrix(document) == document, "run scripts/gen_docs.py"


def test_every_command_is_in_the_reference_and_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    reference = (ROOT / "docs" / "cli.md").read_text()
    for command in ("inspect", "convert", "diff", "verify", "formats"):
        assert f"## modelconv {command}" in reference
        assert f"modelconv {command}" in readme
