"""Every example in README.md and docs/*.md runs, and says what it prints.

Blocks are taken from the Markdown files in document order:

- ```sh blocks: every line that is not blank or a comment is a command and
  must start with ``modelconv``; it must exit 0, or the code a trailing
  comment names (``# ... exit 1``).
- ```console blocks: lines starting with ``$ `` are commands, the lines after
  each are its output (stdout and stderr as a terminal shows them, 80
  columns). The output must match line for line, trailing spaces aside; a
  line holding only ``...`` stands for any number of lines, where a long
  table was trimmed. The exit code rule is the one of sh blocks.
- ```python blocks run in a fresh interpreter and must exit 0; they assert
  what they show.

All blocks of one document share one working folder, holding a copy of
fixtures/, so a later block may use a file an earlier one wrote. A block
preceded by ``<!-- not-run: reason -->`` is skipped; NOT_RUN_LIMIT keeps
that list tiny.

docs/cli.md is generated and checked by test_cli_docs.py; its blocks are help
texts, not examples. docs/performance.md holds benchmark figures whose one
command is the benchmark itself, so it is not run here either.

To refresh the outputs of console blocks after a deliberate change of the
CLI's output (blocks with a ``...`` line are left for a hand edit):

    python tests/test_docs_examples.py --update
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_EXAMPLES = {"cli.md", "performance.md"}
DOCUMENTS = [ROOT / "README.md"] + sorted(
    p for p in (ROOT / "docs").glob("*.md") if p.name not in NOT_EXAMPLES
)
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(\S.*?)\s*-->$")
FENCE = re.compile(r"^```(\w*)\s*$")
EXIT = re.compile(r"#.*\bexit (\d+)\b")
SHELL_SYNTAX = re.compile(r"[|&;<>$`*]")
ELLIPSIS = "..."
# The README's two setup commands and the benchmark command: not examples.
NOT_RUN_LIMIT = 5
WIDTH = "80"


@dataclass
class Command:
    line: int
    text: str
    expected: list[str] | None = None  # None: output not checked (sh blocks)

    @property
    def exit_code(self) -> int:
        found = EXIT.search(self.text)
        return int(found.group(1)) if found else 0


@dataclass
class Block:
    document: Path
    line: int
    language: str
    lines: list[str]
    not_run: str | None = None
    commands: list[Command] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> Iterator[Block]:
    """The fenced blocks of ``document``, with the not-run marker before each."""
    lines = document.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not opened:
            index += 1
            continue
        start = index
        index += 1
        while index < len(lines) and lines[index].rstrip() != "```":
            index += 1
        previous = next(
            (lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()),
            "",
        )
        marker = NOT_RUN.match(previous)
        block = Block(
            document,
            start + 1,
            opened.group(1),
            lines[start + 1 : index],
            marker.group(1) if marker else None,
        )
        block.commands = _commands(block)
        yield block
        index += 1


def _commands(block: Block) -> list[Command]:
    if block.language == "sh":
        return [
            Command(block.line + 1 + i, text.strip())
            for i, text in enumerate(block.lines)
            if text.strip() and not text.strip().startswith("#")
        ]
    if block.language != "console":
        return []
    commands: list[Command] = []
    for i, text in enumerate(block.lines):
        if text.startswith("$ "):
            commands.append(Command(block.line + 1 + i, text[2:].strip(), []))
        elif commands and commands[-1].expected is not None:
            commands[-1].expected.append(text)
    return commands


def runnable(block: Block) -> bool:
    return block.not_run is None and block.language in ("sh", "console", "python")


def all_blocks() -> list[Block]:
    return [block for document in DOCUMENTS for block in blocks(document)]


# --------------------------------------------------------------------------
# Running


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FORCE_COLOR", None)
    env.update(COLUMNS=WIDTH, LINES="50", NO_COLOR="1")
    return env


def run_command(command: Command, folder: Path) -> tuple[int, str]:
    """Exit code and terminal output (stdout and stderr, interleaved)."""
    words = shlex.split(command.text, comments=True)
    if words[:1] == ["modelconv"] and not SHELL_SYNTAX.search(
        command.text.split("#")[0]
    ):
        return _run_in_process(words[1:], folder)
    done = subprocess.run(
        ["bash", "-c", command.text],
        cwd=folder,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout


def _run_in_process(args: list[str], folder: Path) -> tuple[int, str]:
    import logging

    from click.testing import CliRunner

    from modelconv.cli import main

    # The CLI configures logging once per process; drop handlers that hold
    # the streams of an earlier run.
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
    here = Path.cwd()
    os.chdir(folder)
    try:
        result = CliRunner(env=_environment()).invoke(
            main, args, catch_exceptions=False
        )
    finally:
        os.chdir(here)
    return result.exit_code, result.output


def run_python(block: Block, folder: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(block.lines)],
        cwd=folder,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Line-for-line equality, where a ``...`` line matches any run of lines."""
    want = [line.rstrip() for line in expected]
    have = [line.rstrip() for line in actual]
    while want and not want[-1]:
        want.pop()
    while have and not have[-1]:
        have.pop()

    def match(i: int, j: int) -> bool:
        if i == len(want):
            return j == len(have)
        if want[i] == ELLIPSIS:
            return any(match(i + 1, k) for k in range(j, len(have) + 1))
        return j < len(have) and want[i] == have[j] and match(i + 1, j + 1)

    return match(0, 0)


def work_folder(base: Path) -> Path:
    folder = base / "work"
    folder.mkdir()
    shutil.copytree(ROOT / "fixtures", folder / "fixtures")
    return folder


def check_block(block: Block, folder: Path) -> None:
    if block.language == "python":
        code, output = run_python(block, folder)
        assert code == 0, f"{block.where}: python block failed:\n{output}"
        return
    for command in block.commands:
        assert command.text.startswith("modelconv"), (
            f"{block.where}: {command.text!r} is not a modelconv command; mark "
            "the block <!-- not-run: reason --> if it is not an example"
        )
        code, output = run_command(command, folder)
        where = f"{block.document.relative_to(ROOT)}:{command.line}"
        assert code == command.exit_code, (
            f"{where}: {command.text!r} exited {code}, the docs say "
            f"{command.exit_code}; it printed:\n{output}"
        )
        if command.expected is not None:
            assert output_matches(command.expected, output.splitlines()), (
                f"{where}: {command.text!r} printed:\n{output}\nwhere the docs "
                "show:\n" + "\n".join(command.expected)
            )


# --------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_example_runs(document: Path, tmp_path: Path) -> None:
    folder = work_folder(tmp_path)
    for block in blocks(document):
        if not runnable(block):
            continue
        if block.language == "python" and "import keras" in "\n".join(block.lines):
            pytest.importorskip("keras")
        check_block(block, folder)


def test_docs_hold_examples() -> None:
    """The guide and the API page show runnable examples, not prose alone."""
    counts = {
        name: sum(runnable(b) for b in blocks(ROOT / "docs" / name))
        for name in ("guide.md", "api.md", "security.md")
    }
    assert all(count >= 3 for count in counts.values()), counts


def test_not_run_blocks_are_few_and_say_why() -> None:
    skipped = [b for b in all_blocks() if b.not_run is not None]
    assert len(skipped) <= NOT_RUN_LIMIT, [b.where for b in skipped]
    assert all(len(b.not_run or "") >= 10 for b in skipped)


def test_unlabelled_blocks_hold_no_commands() -> None:
    """A command in a block without a language would escape these tests."""
    for block in all_blocks():
        if block.language in ("", "text") and block.not_run is None:
            starts = [line.lstrip("$ ") for line in block.lines]
            assert not any(s.startswith("modelconv ") for s in starts), block.where


def test_output_matching_is_strict() -> None:
    assert output_matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert output_matches(["a  ", ""], ["a"])
    assert not output_matches(["a", "b"], ["a", "c"])
    assert not output_matches(["a", "...", "d"], ["a", "b", "c"])


# --------------------------------------------------------------------------
# Facts the docs state, checked against the code


def _table(document: str, name: str) -> list[list[str]]:
    """The rows of the table between ``<!-- NAME:BEGIN -->`` and ``END``."""
    text = (ROOT / "docs" / document).read_text(encoding="utf-8")
    begin, end = f"<!-- {name}:BEGIN -->", f"<!-- {name}:END -->"
    assert begin in text and end in text, f"{document} lacks the {name} markers"
    body = text[text.index(begin) + len(begin) : text.index(end)]
    rows = [line for line in body.strip().splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_security_page_lists_the_exact_allow_list() -> None:
    from modelconv.unpickle import _ALLOWED

    rows = _table("security.md", "ALLOW-LIST")
    documented = [(module.strip("`"), name.strip("`")) for module, name, _ in rows]
    assert len(documented) == len(set(documented)), "a pair is listed twice"
    assert set(documented) == set(_ALLOWED)


def test_security_page_states_the_limits_in_the_code() -> None:
    from modelconv import limits, unpickle

    rows = _table("security.md", "LIMITS")
    assert len(rows) >= 10
    for name, value, _ in rows:
        constant = name.strip("`")
        actual = getattr(limits, constant, getattr(unpickle, constant, None))
        assert actual is not None, f"{constant} is not a limit in the code"
        assert int(value.split()[0]) == actual, constant


# --------------------------------------------------------------------------
# Refreshing the docs


def update(document: Path, folder: Path) -> bool:
    """Rewrite the outputs of console blocks in ``document``; True if changed."""
    lines = document.read_text(encoding="utf-8").splitlines()
    replacements: list[tuple[Block, list[str]]] = []
    for block in blocks(document):
        if not runnable(block):
            continue
        if block.language == "python":
            code, output = run_python(block, folder)
            if code:
                print(f"{block.where}: python block failed:\n{output}")
            continue
        new_lines: list[str] = []
        for command in block.commands:
            code, output = run_command(command, folder)
            if code != command.exit_code:
                print(f"{block.where}: {command.text!r} exited {code}\n{output}")
            if command.expected is None:
                continue
            new_lines.append(f"$ {command.text}")
            if ELLIPSIS in [e.strip() for e in command.expected]:
                new_lines += command.expected
            else:
                new_lines += [line.rstrip() for line in output.rstrip().splitlines()]
        if block.language == "console" and new_lines != block.lines:
            replacements.append((block, new_lines))
    for block, new_lines in reversed(replacements):
        lines[block.line : block.line + len(block.lines)] = new_lines
    changed = bool(replacements)
    if changed:
        document.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return changed


if __name__ == "__main__":
    import tempfile

    if "--update" not in sys.argv:
        raise SystemExit(__doc__)
    wanted = [a for a in sys.argv[1:] if not a.startswith("--")]
    for doc in DOCUMENTS:
        if wanted and not any(doc.match(w) for w in wanted):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder_ = work_folder(Path(tmp))
            print(f"{doc.name}: {'updated' if update(doc, folder_) else 'current'}")
