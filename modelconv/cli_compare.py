"""The `diff` and `verify` commands; cli.py adds them to the main group."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from .cli import (
    EXIT_CODES_HELP,
    ModelconvCommand,
    common_options,
    console,
    json_option,
    max_bytes_option,
    print_json,
    run_guarded,
    setup_logging,
)

# Below this many bytes per side a diff finishes before a bar would be seen.
PROGRESS_MIN_BYTES = 64 * 2**20


@click.command("diff", cls=ModelconvCommand, epilog=EXIT_CODES_HELP)
@click.argument("a", type=click.Path(path_type=str))
@click.argument("b", type=click.Path(path_type=str))
@click.option(
    "--atol",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help=(
        "Absolute tolerance: |a - b| <= atol + rtol * |b| is close. Tolerances "
        "apply to floats; integer and bool tensors compare exactly."
    ),
)
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Relative tolerance (numpy isclose semantics, relative to B).",
)
@click.option(
    "--ulps",
    type=click.IntRange(min=0),
    default=None,
    help="Also accept floats at most this many units in the last place apart.",
)
@click.option(
    "--nan-differs",
    is_flag=True,
    help="Count NaN against NaN as a difference (by default NaN equals NaN).",
)
@click.option("--optimizer", is_flag=True, help="Compare optimizer state too.")
@click.option(
    "--strict",
    is_flag=True,
    help="Count metadata differences (producer version, training config...).",
)
@click.option("--from-a", "format_a", help="Read A as this format.")
@click.option("--from-b", "format_b", help="Read B as this format.")
@json_option
@max_bytes_option
@common_options
def diff_command(
    a: str,
    b: str,
    atol: float,
    rtol: float,
    ulps: int | None,
    nan_differs: bool,
    optimizer: bool,
    strict: bool,
    format_a: str | None,
    format_b: str | None,
    as_json: bool,
    max_bytes: int,
    debug: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Compare two models: architecture, weights and metadata.

    Configs are normalised first, so Keras 1/2/3 serialisation details are not
    reported as changes. Tensors are matched by name, else by layer and
    position, and compared chunk by chunk. Tolerances default to 0; NaN
    equals NaN unless --nan-differs. Exit 0 when identical (within tolerance),
    1 when different, 2 on error.
    """
    setup_logging(verbose, quiet)
    options = dict(
        atol=atol,
        rtol=rtol,
        ulps=ulps,
        nan_differs=nan_differs,
        optimizer=optimizer,
        strict=strict,
    )

    def action() -> int:
        from .diff import diff_paths

        show_bar = not (quiet or as_json)
        with _DiffProgress(show_bar) as progress:
            result = diff_paths(
                a,
                b,
                format_a=format_a,
                format_b=format_b,
                max_bytes=max_bytes,
                progress_factory=progress,
                **options,
            )
        if as_json:
            print_json(result.to_json())
        elif quiet:
            from .render_compare import summary_line

            console().print(summary_line(result))
        else:
            from .render_compare import render_diff

            console().print(render_diff(result))
        return result.exit_code

    run_guarded(as_json, debug, action)


@click.command("verify", cls=ModelconvCommand, epilog=EXIT_CODES_HELP)
@click.argument("file", type=click.Path(path_type=str))
@click.option("--weights", help="Attach this weights-only file to FILE first.")
@click.option("--from", "source_format", help="Read FILE as this format.")
@click.option(
    "--via",
    multiple=True,
    metavar="FORMAT",
    help="Round-trip through this format (repeatable). Default: every format "
    "that can carry the model losslessly.",
)
@click.option(
    "--predict",
    is_flag=True,
    help="Also compare Keras predictions (needs Keras; runs only .keras files "
    "modelconv wrote, never FILE itself).",
)
@json_option
@max_bytes_option
@common_options
def verify_command(
    file: str,
    weights: str | None,
    source_format: str | None,
    via: tuple[str, ...],
    predict: bool,
    as_json: bool,
    max_bytes: int,
    debug: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Convert FILE through formats and back, and check that nothing changed.

    For each format: architecture, tensor names and order, dtypes, shapes
    and bytes. A lossy format runs only when named with --via, and then
    reports `lossy` (exit 1). Exit 1 when anything did not survive.
    """
    setup_logging(verbose, quiet)

    def action() -> int:
        from .verify import verify_path

        result = verify_path(
            file,
            via=list(via),
            weights=weights,
            source_format=source_format,
            predict=predict,
            max_bytes=max_bytes,
        )
        if as_json:
            print_json(result.to_json())
        else:
            from .render_compare import render_verify

            console().print(render_verify(result))
        return result.exit_code

    run_guarded(as_json, debug, action)


class _DiffProgress:
    """A rich bar on stderr, only on a terminal and only for big models.

    Used as ``progress_factory``: diff_paths calls it with the total bytes
    once both models are open and gets back a per-tensor callback.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None

    def __enter__(self) -> Callable[[int], Callable[[int], None] | None] | None:
        return self.start if self.enabled else None

    def start(self, total: int) -> Callable[[int], None] | None:
        if total < PROGRESS_MIN_BYTES:
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress

        self.bar = Progress(
            BarColumn(), DownloadColumn(), console=console(err=True), transient=True
        )
        self.bar.start()
        task = self.bar.add_task("comparing", total=total)
        return lambda done: self.bar.advance(task, done)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
