"""rich renderables for inspect, convert and formats records.

Functions here build renderables; the CLI decides where they are printed.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .api import ConvertReport
from .formats import FormatInfo
from .inspect import InspectReport


def human_bytes(count: int | None) -> str:
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _shape(shape: Any) -> str:
    if shape is None:
        return "?"
    if shape and isinstance(shape[0], list | tuple):
        return ", ".join(_shape(s) for s in shape)
    dims = ["None" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def render_inspect(report: InspectReport, max_rows: int = 200) -> RenderableType:
    parts: list[RenderableType] = []
    producer = report.producer
    who = " ".join(str(v) for v in (producer.get("name"), producer.get("version")) if v)
    header = Table.grid(padding=(0, 2))
    header.add_row("format", f"{report.format} ({report.flavour})")
    if report.recognised:
        header.add_row("recognised", report.recognised)
    header.add_row("producer", who or "unknown")
    if report.backend:
        header.add_row("backend", report.backend)
    header.add_row("file size", human_bytes(report.file_size))
    parts.append(Panel(header, title=report.path, expand=False))

    if report.layers:
        layers = Table(title="Layers", title_justify="left")
        for column in ("name", "class", "output shape", "params", "connected to"):
            layers.add_column(column, justify="right" if column == "params" else "left")
        for layer in report.layers[:max_rows]:
            layers.add_row(
                layer.name,
                layer.class_name,
                _shape(layer.output_shape),
                _count(layer.params),
                ", ".join(layer.inbound),
            )
        parts.append(layers)
        if len(report.layers) > max_rows:
            parts.append(Text(f"... {len(report.layers) - max_rows} more layers"))
    elif not report.has_architecture:
        hint = "No architecture in this file (weights only)."
        if report.flavour in ("keras-weights", "keras3-weights"):
            hint += (
                " To make a full model, attach it to its architecture: "
                f"modelconv convert model.json --weights {report.path} out.h5"
            )
        parts.append(Text(hint, style="dim"))

    if report.tensors:
        parts.append(_tensor_table(report, max_rows))
        parts.extend(_tensor_data_tables(report, max_rows))
        if len(report.tensors) > max_rows:
            parts.append(Text(f"... {len(report.tensors) - max_rows} more tensors"))

    totals = Table.grid(padding=(0, 2))
    totals.add_row("total params", _count(report.total_params))
    totals.add_row("trainable", _count(report.trainable_params))
    totals.add_row("non-trainable", _count(report.non_trainable_params))
    totals.add_row("tensor bytes", human_bytes(report.total_bytes))
    parts.append(Panel(totals, title="Totals", expand=False))
    if report.migrations:
        parts.append(
            Text("Keras 3 migrations that would apply: " + ", ".join(report.migrations))
        )
    for warning in report.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Group(*parts)


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


def render_convert(report: ConvertReport) -> RenderableType:
    lines = [
        f"wrote {report.destination} ({report.format}"
        + (f", {report.flavour}" if report.flavour else "")
        + f"): {report.tensors} tensors, {human_bytes(report.bytes)}, "
        "read back and verified"
    ]
    lines += [f"migration: {m}" for m in report.migrations]
    lines += [f"lost: {loss}" for loss in report.losses]
    if report.casts:
        shown = "; ".join(report.casts[:3]) + ("; ..." if len(report.casts) > 3 else "")
        lines.append(f"cast {len(report.casts)} tensors ({shown})")
    if report.dropped:
        shown = ", ".join(report.dropped[:5])
        more = ", ..." if len(report.dropped) > 5 else ""
        lines.append(f"dropped {len(report.dropped)} tensors ({shown}{more})")
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    return Group(*(Text(line) for line in lines))


def render_formats(formats: tuple[FormatInfo, ...]) -> RenderableType:
    table = Table(title="Formats", title_justify="left")
    for column in ("name", "reads", "writes", "arch", "weights", "optimizer", "dtypes"):
        table.add_column(column)
    for info in formats:
        caps = info.capabilities
        names = info.name + (f" ({', '.join(info.aliases)})" if info.aliases else "")
        dtype_text = (
            "all" if len(caps.dtypes) == 15 else ", ".join(sorted(caps.dtypes)) or "-"
        )
        table.add_row(
            names,
            ", ".join(info.flavours_read),
            ", ".join(info.flavours_write) or "-",
            _yes(caps.architecture),
            _yes(caps.weights),
            _yes(caps.optimizer),
            dtype_text,
        )
    return table


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _tensor_table(report: InspectReport, max_rows: int) -> Table:
    """Name, role, dtype, shape and size; long names wrap, never truncate."""
    table = Table(title="Tensors", title_justify="left")
    table.add_column("name", overflow="fold", min_width=16)
    for column in ("role", "dtype", "shape"):
        table.add_column(column, no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    for tensor in report.tensors[:max_rows]:
        table.add_row(
            tensor.name,
            tensor.role,
            tensor.dtype,
            _shape(list(tensor.shape)),
            human_bytes(tensor.nbytes),
        )
    return table


def _tensor_data_tables(report: InspectReport, max_rows: int) -> list[Table]:
    """--checksums and --stats, each in a table of its own, so that all fit.

    The human table shows the first 16 hex digits of each sha256; ``--json``
    has them whole.
    """
    tables = []
    shown = report.tensors[:max_rows]
    if any(t.sha256 for t in shown):
        table = Table(title="Checksums", title_justify="left")
        table.add_column("name", overflow="fold")
        table.add_column("sha256 (first 16 hex digits)", no_wrap=True)
        for tensor in shown:
            table.add_row(tensor.name, (tensor.sha256 or "")[:16])
        tables.append(table)
    if any(t.stats for t in shown):
        table = Table(title="Statistics", title_justify="left")
        table.add_column("name", overflow="fold")
        for column in ("min", "max", "mean", "std", "nan/inf"):
            table.add_column(column, justify="right", no_wrap=True)
        for tensor in shown:
            s = tensor.stats
            if s is None:
                table.add_row(tensor.name, *[""] * 5)
                continue
            table.add_row(
                tensor.name,
                _num(s.min),
                _num(s.max),
                _num(s.mean),
                _num(s.std),
                f"{s.nan_count}/{s.inf_count}",
            )
        tables.append(table)
    return tables
