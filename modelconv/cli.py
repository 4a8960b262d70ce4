"""The command line: the only place that prints or exits.

Heavy modules (numpy, h5py, rich) are imported inside the commands so that
``modelconv --help`` answers at once.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from . import __version__
from .errors import EXIT_INTERNAL, EXIT_USER, ModelconvError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES_HELP = """\b
Exit codes:
  0  success; for diff and verify: identical, or within tolerance
  1  a difference (diff), a fidelity failure or a lossy --via format (verify)
  2  bad input or request: missing or unreadable file, refused hostile
     content, a lossy conversion without --allow-lossy, an existing
     destination without --force, a bad option
  3  modelconv's own fault (a read-back mismatch, an unexpected error)
"""

SAFETY_HELP = """\b
Safety: nothing in a file is ever executed. Pickles go through a
restricted unpickler that builds only numpy arrays, containers and known
model records; HDF5 links out of the file, external storage and filter
plugins are refused; declared sizes over --max-bytes are refused before
any work.
"""

# Exceptions that, escaping a reader, mean the file is malformed rather than
# that modelconv is broken: they become exit 2, not 3.
_INPUT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    OverflowError,
    RecursionError,
    UnicodeError,
    MemoryError,
)

log = logging.getLogger("modelconv")


def common_options(func: F) -> F:
    """--debug, -v and -q, taken by every command."""
    func = click.option(
        "--debug", is_flag=True, help="Show the full traceback on errors."
    )(func)
    func = click.option(
        "-v", "--verbose", count=True, help="Log more to stderr (-vv for debug)."
    )(func)
    func = click.option(
        "-q", "--quiet", is_flag=True, help="Print nothing but errors and results."
    )(func)
    return func


def json_option(func: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print a JSON document on stdout."
    )(func)


def max_bytes_option(func: F) -> F:
    from .limits import DEFAULT_MAX_BYTES

    return click.option(
        "--max-bytes",
        type=click.IntRange(min=0),
        default=DEFAULT_MAX_BYTES,
        show_default=True,
        help="Refuse files declaring more tensor bytes than this.",
    )(func)


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if quiet:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    log.setLevel(level)


def fail(exc: BaseException, *, as_json: bool, debug: bool) -> NoReturn:
    """Report ``exc`` as one line on stderr (and JSON on stdout); exit."""
    if isinstance(exc, ModelconvError):
        kind, code, message = exc.kind, exc.exit_code, str(exc)
    elif isinstance(exc, _INPUT_EXCEPTIONS):
        kind, code = "bad-input", EXIT_USER
        message = (
            f"cannot read the input: {type(exc).__name__}: {exc}; the file may be "
            "damaged or not what its name says (run with --debug for details)"
        )
    else:
        kind, code = "internal", EXIT_INTERNAL
        message = (
            f"internal error: {type(exc).__name__}: {exc}; please report it with "
            "the output of --debug"
        )
    if debug:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = " ".join(message.split())
    click.echo(f"error: {message}", err=True)
    if as_json:
        from .jsonout import error_document

        click.echo(error_document(kind, message))
    sys.exit(code)


def run_guarded(as_json: bool, debug: bool, action: Callable[[], int | None]) -> None:
    """Run ``action`` and exit with its code, turning errors into one line."""
    try:
        code = action()
    except (KeyboardInterrupt, SystemExit):
        raise
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one line
        fail(exc, as_json=as_json, debug=debug)
    sys.exit(code or 0)


def console(err: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=err, no_color=bool(os.environ.get("NO_COLOR")) or None)


def print_json(document: dict[str, Any]) -> None:
    from .jsonout import dumps

    click.echo(dumps(document))


class ModelconvCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json = "--json" in args  # the parser consumes ``args``
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            # A bad option is an error like any other: with --json the caller
            # still gets the error document on stdout (Click prints the usage
            # text on stderr and exits 2).
            if wants_json:
                from .jsonout import error_document

                message = " ".join(exc.format_message().split())
                click.echo(error_document("usage", message))
            raise


class _Group(click.Group):
    command_class = ModelconvCommand

    def list_commands(self, ctx: click.Context) -> list[str]:
        return ["inspect", "convert", "diff", "verify", "formats"]


@click.group(
    cls=_Group,
    epilog=EXIT_CODES_HELP + "\n" + SAFETY_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="modelconv")
def main() -> None:
    """Inspect, convert, diff and verify saved neural-network models.

    Reads Keras 1/2/3 HDF5 and .keras files, pickle and joblib dumps, NPZ,
    Keras JSON, modelconv JSON and TensorFlow.js models without TensorFlow and
    without running any code from the file.
    """
    # Names from files may hold what the terminal's encoding cannot (a lone
    # surrogate kept by modelconv JSON): show an escape, never crash.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("file", type=click.Path(path_type=str))
@click.option("--weights", "weights", help="Attach this weights-only file.")
@click.option("--from", "source_format", help="Read FILE as this format.")
@click.option("--checksums", is_flag=True, help="Add each tensor's sha256.")
@click.option("--stats", is_flag=True, help="Add min, max, mean, std, NaN/Inf counts.")
@json_option
@max_bytes_option
@common_options
def inspect(
    file: str,
    weights: str | None,
    source_format: str | None,
    checksums: bool,
    stats: bool,
    as_json: bool,
    max_bytes: int,
    debug: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Show what a model file holds: format, layers, tensors, totals.

    Reads headers only, unless --checksums or --stats ask for the data.
    """
    setup_logging(verbose, quiet)

    def action() -> int:
        from .api import load
        from .inspect import inspect_model

        model = load(file, format=source_format, weights=weights, max_bytes=max_bytes)
        with model:
            report = inspect_model(model, file, checksums=checksums, stats=stats)
        if as_json:
            print_json(report.to_json())
        else:
            from .render import render_inspect

            console().print(render_inspect(report))
        return 0

    run_guarded(as_json, debug, action)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("src", type=click.Path(path_type=str))
@click.argument("dst", type=click.Path(path_type=str), metavar="DST|-")
@click.option("--weights", help="Attach this weights-only file to SRC first.")
@click.option("--from", "source_format", help="Read SRC as this format.")
@click.option("--to", "target_format", help="Write this format (default: from DST).")
@click.option("--flavour", help="Flavour of the target format (see `formats`).")
@click.option(
    "--for",
    "target_keras",
    type=click.Choice(["keras2", "keras3"]),
    help="Make HDF5/.keras output load in this Keras line.",
)
@click.option("--compress", help="Compression NAME[:LEVEL] (e.g. zlib:3, gzip, lz4).")
@click.option(
    "--drop",
    multiple=True,
    type=click.Choice(["optimizer", "state"]),
    help="Leave out optimizer or state tensors (repeatable).",
)
@click.option("--cast", help="Cast every floating tensor to this dtype.")
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
@click.option(
    "--allow-lossy",
    is_flag=True,
    help="Accept losses the target format forces (they are listed).",
)
@json_option
@max_bytes_option
@common_options
def convert(
    src: str,
    dst: str,
    weights: str | None,
    source_format: str | None,
    target_format: str | None,
    flavour: str | None,
    target_keras: str | None,
    compress: str | None,
    drop: tuple[str, ...],
    cast: str | None,
    force: bool,
    allow_lossy: bool,
    as_json: bool,
    max_bytes: int,
    debug: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Convert SRC to DST, bit for bit, checked by reading DST back.

    The output is written beside DST, read back and compared tensor by tensor
    before it replaces DST. A conversion that would lose something stops and
    names it unless --allow-lossy (or --drop / --cast) says so.
    """
    setup_logging(verbose, quiet)
    options: dict[str, Any] = {
        "source_format": source_format,
        "weights": weights,
        "max_bytes": max_bytes,
        "flavour": flavour,
        "target_keras": target_keras,
        "compress": compress,
        "allow_lossy": allow_lossy,
        "drop": drop,
        "cast": cast,
    }

    def action() -> int:
        from .api import convert as do_convert

        if dst == "-":
            return _convert_to_stdout(src, target_format, options)
        with _progress(enabled=not (quiet or as_json)) as progress:
            report = do_convert(
                src,
                dst,
                format=target_format,
                force=force,
                progress=progress,
                **options,
            )
        if as_json:
            print_json(report.to_json())
        elif not quiet:
            from .render import render_convert

            console().print(render_convert(report))
        return 0

    run_guarded(as_json, debug, action)


@main.command(epilog=EXIT_CODES_HELP)
@json_option
@common_options
def formats(as_json: bool, debug: bool, verbose: int, quiet: bool) -> None:
    """List the formats, their flavours and what each can carry."""
    setup_logging(verbose, quiet)

    def action() -> int:
        from .formats import FORMATS

        if as_json:
            print_json({"formats": [_format_json(info) for info in FORMATS]})
        else:
            from .render import render_formats

            console().print(render_formats(FORMATS))
        return 0

    run_guarded(as_json, debug, action)


def _convert_to_stdout(
    src: str, target_format: str | None, options: dict[str, Any]
) -> int:
    """Write the converted file to stdout (single-file formats only).

    The output is still written to a temporary file, read back and checked
    first; only a verified file is copied to stdout.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from .api import convert as do_convert
    from .errors import UsageError
    from .formats import get_format

    if target_format is None:
        raise UsageError("writing to '-' (stdout) needs --to FORMAT")
    info = get_format(target_format)
    if info.writes_folder:
        raise UsageError(f"{info.name} writes a folder, which cannot go to stdout")
    with tempfile.TemporaryDirectory(prefix="modelconv-") as folder:
        out = Path(folder) / "out"
        do_convert(src, out, format=info.name, **options)
        with out.open("rb") as handle:
            shutil.copyfileobj(handle, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    return 0


def _format_json(info: Any) -> dict[str, Any]:
    caps = info.capabilities
    return {
        "name": info.name,
        "aliases": list(info.aliases),
        "description": info.description,
        "extensions": list(info.extensions),
        "flavours_read": list(info.flavours_read),
        "flavours_write": list(info.flavours_write),
        "capabilities": {
            "architecture": caps.architecture,
            "weights": caps.weights,
            "optimizer": caps.optimizer,
            "state": caps.state,
            "dtypes": sorted(caps.dtypes),
            "nan_payloads": caps.nan_payloads,
            "metadata": caps.metadata,
            "streaming_read": caps.streaming_read,
            "streaming_write": caps.streaming_write,
            "safe_read": caps.safe_read,
        },
    }


class _progress:
    """A rich progress bar on stderr for long writes; silent otherwise."""

    MIN_BYTES = 64 * 2**20

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not self.enabled:
            return None
        return self.update

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            if total < self.MIN_BYTES:
                return
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=console(err=True),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("writing", total=total)
        self.bar.update(self.task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _add_compare_commands() -> None:
    try:
        from .cli_compare import diff_command, verify_command
    except ImportError:
        return
    main.add_command(diff_command, "diff")
    main.add_command(verify_command, "verify")


_add_compare_commands()
