"""Generate the parts of docs/ that come from the code.

    python scripts/gen_docs.py          # rewrite docs/cli.md and the matrix
    python scripts/gen_docs.py --check  # exit 1 if either is stale

docs/cli.md is generated from the CLI; the capability matrix in
docs/formats.md (between the MATRIX markers) from the format registry.
tests/test_cli_docs.py and tests/test_contract.py run the checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "cli.md"
FORMATS_DOC = ROOT / "docs" / "formats.md"
BEGIN, END = "<!-- MATRIX:BEGIN -->", "<!-- MATRIX:END -->"


def render_matrix() -> str:
    """The capability matrix, one row per format, from the registry."""
    from modelconv.formats import FORMATS

    columns = [
        "format",
        "architecture",
        "weights",
        "optimizer state",
        "other state",
        "bfloat16",
        "float64",
        "all 15 dtypes",
        "NaN payloads",
        "metadata",
        "streaming read",
        "streaming write",
        "safe read",
        "writes",
    ]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for info in FORMATS:
        caps = info.capabilities
        cells = [
            f"`{info.name}`",
            caps.architecture,
            caps.weights,
            caps.optimizer,
            caps.state,
            "bfloat16" in caps.dtypes,
            "float64" in caps.dtypes,
            len(caps.dtypes) == 15,
            caps.nan_payloads,
            caps.metadata,
            caps.streaming_read,
            caps.streaming_write,
            caps.safe_read,
            ", ".join(info.flavours_write) or "no",
        ]
        text = [c if isinstance(c, str) else ("yes" if c else "no") for c in cells]
        rows.append("| " + " | ".join(text) + " |")
    return BEGIN + "\n" + "\n".join(rows) + "\n" + END


def with_matrix(document: str) -> str:
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < 0:
        raise SystemExit(f"{FORMATS_DOC} lacks the {BEGIN} ... {END} markers")
    return document[:start] + render_matrix() + document[end + len(END) :]


def render() -> str:
    from modelconv.cli import main

    lines = [
        "# CLI reference",
        "",
        "Generated from the CLI by `python scripts/gen_docs.py`; do not edit.",
        "",
        "Every command takes `--debug` (traceback on errors), `-v` (more logging",
        "on stderr) and `-q`, and honours `NO_COLOR`. Shell completion: add",
        '`eval "$(_MODELCONV_COMPLETE=bash_source modelconv)"` to `~/.bashrc`',
        "(`zsh_source` and `fish_source` for zsh and fish).",
        "",
    ]
    context = click.Context(
        main,
        info_name="modelconv",
        max_content_width=88,
        help_option_names=["-h", "--help"],
    )
    lines += ["## modelconv", "", "```", main.get_help(context), "```", ""]
    for name in main.list_commands(context):
        command = main.get_command(context, name)
        if command is None:
            continue
        sub = click.Context(
            command, info_name=name, parent=context, max_content_width=88
        )
        lines += [f"## modelconv {name}", "", "```", command.get_help(sub), "```", ""]
    return "\n".join(lines)


def undocumented() -> list[str]:
    """Commands and options that have no help text."""
    from modelconv.cli import main

    context = click.Context(main, info_name="modelconv")
    missing = []
    for name in main.list_commands(context):
        command = main.get_command(context, name)
        if command is None:
            missing.append(f"command {name} is listed but not registered")
            continue
        if not (command.help or command.short_help):
            missing.append(f"command {name}")
        for param in command.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{name} {'/'.join(param.opts)}")
    return missing


def main() -> None:
    text = render()
    formats_doc = FORMATS_DOC.read_text()
    matrix_doc = with_matrix(formats_doc)
    if "--check" in sys.argv:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text or formats_doc != matrix_doc:
            print("docs are stale: run python scripts/gen_docs.py")
            sys.exit(1)
        return
    TARGET.write_text(text)
    FORMATS_DOC.write_text(matrix_doc)


if __name__ == "__main__":
    main()
