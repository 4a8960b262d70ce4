"""rich renderables for Diff and Verify records; the CLI decides where they go."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .diff import SEVERITY, ChangeKind, Diff, TensorDiff, TensorStatus, json_value
from .verify import FormatCheck, Verify, VerifyStatus

_STATUS_STYLE = {
    TensorStatus.ONLY_IN_A: "bold red",
    TensorStatus.ONLY_IN_B: "bold red",
    TensorStatus.SHAPE_CHANGED: "bold red",
    TensorStatus.DTYPE_CHANGED: "red",
    TensorStatus.CHANGED: "yellow",
    TensorStatus.CLOSE: "green",
    TensorStatus.SAME: "green",
}
_KIND_STYLE = {
    ChangeKind.ADDED: "green",
    ChangeKind.REMOVED: "red",
    ChangeKind.RENAMED: "cyan",
    ChangeKind.CHANGED: "yellow",
    ChangeKind.CONNECTIONS: "magenta",
    ChangeKind.DEFAULT: "dim",
}
_VERIFY_STYLE = {
    VerifyStatus.PASS: "green",
    VerifyStatus.FAIL: "bold red",
    VerifyStatus.LOSSY: "yellow",
    VerifyStatus.SKIPPED: "dim",
    VerifyStatus.ERROR: "bold red",
}
# Longer values (a whole initializer config) are cut to keep rows readable;
# --json has them whole.
_VALUE_WIDTH = 60
# Notes per format in the verify table; --json lists every problem.
MAX_NOTES = 8


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(json_value(value), ensure_ascii=False, default=str)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"


def _float(value: float | None) -> str:
    if value is None:
        return ""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return "0" if value == 0 else f"{value:.3g}"


def summary_line(diff: Diff) -> Text:
    """The one line the diff output opens with."""
    tolerance = ""
    opts = diff.options
    if opts.tolerant:
        parts = [f"atol={opts.atol:g}", f"rtol={opts.rtol:g}"]
        if opts.ulps:
            parts.append(f"ulps={opts.ulps}")
        tolerance = " within " + ", ".join(parts)
    if diff.identical:
        return Text(f"identical{tolerance}", style="bold green")
    count = diff.differences
    noun = "difference" if count == 1 else "differences"
    return Text(f"{count} {noun}", style="bold red")


def render_diff(diff: Diff, *, max_rows: int = 200) -> RenderableType:
    """Summary line, architecture changes, weights by severity, metadata."""
    parts: list[RenderableType] = [summary_line(diff)]
    if diff.a or diff.b:
        parts.append(Text(f"A: {diff.a}\nB: {diff.b}", style="dim"))
    for side, facts in (("A", diff.source_a), ("B", diff.source_b)):
        rules = facts.get("compared_as_keras3")
        if rules:
            parts.append(
                Text(
                    f"{side} is a Keras 1 model, compared as Keras 3 reads it "
                    f"(migrations: {', '.join(rules)})",
                    style="dim",
                )
            )
    parts.append(_architecture_section(diff))
    parts.append(_weights_section(diff, max_rows))
    if diff.metadata:
        parts.append(_metadata_section(diff))
    return Group(*parts)


def _architecture_section(diff: Diff) -> RenderableType:
    counted = [c for c in diff.architecture if c.counts]
    defaults = [c for c in diff.architecture if not c.counts]
    if not counted:
        note = "Architecture: no changes"
        if defaults:
            note += f" ({len(defaults)} spelled-out defaults)"
        return Text(note)
    table = Table(title="Architecture", title_justify="left")
    for column in ("change", "where", "A", "B"):
        table.add_column(column, overflow="fold")
    for change in counted:
        table.add_row(
            Text(change.kind.value, style=_KIND_STYLE[change.kind]),
            change.path or "/",
            _value(change.a),
            _value(change.b),
        )
    if defaults:
        table.caption = f"{len(defaults)} spelled-out defaults not shown (see --json)"
    return table


def _weights_section(diff: Diff, max_rows: int) -> RenderableType:
    rank = {status: index for index, status in enumerate(SEVERITY)}
    same = [t for t in diff.tensors if t.status is TensorStatus.SAME]
    shown = sorted(
        (t for t in diff.tensors if t.status is not TensorStatus.SAME),
        key=lambda t: (rank[t.status], -(_sort_size(t))),
    )
    if not shown:
        return Text(f"Weights: {len(same)} tensors identical")
    table = Table(title="Weights", title_justify="left")
    for column in ("status", "tensor", "max |a-b|", "max rel", "mismatched"):
        numeric = column.startswith("max") or column == "mismatched"
        table.add_column(column, justify="right" if numeric else "left")
    for tensor in shown[:max_rows]:
        table.add_row(
            Text(tensor.status.value, style=_STATUS_STYLE[tensor.status]),
            _tensor_label(tensor),
            _float(tensor.max_abs_diff),
            _float(tensor.max_rel_diff),
            _mismatched(tensor),
        )
    notes = []
    if len(shown) > max_rows:
        notes.append(f"{len(shown) - max_rows} more not shown (see --json)")
    if same:
        notes.append(f"{len(same)} tensors identical")
    if notes:
        table.caption = "; ".join(notes)
    return table


def _sort_size(tensor: TensorDiff) -> float:
    value = tensor.max_abs_diff
    if value is None:
        return 0.0
    return math.inf if math.isnan(value) else value


def _tensor_label(tensor: TensorDiff) -> str:
    label = tensor.name
    if tensor.name_b and tensor.name_a and tensor.name_b != tensor.name_a:
        label += f" ↔ {tensor.name_b}"
    if tensor.status is TensorStatus.SHAPE_CHANGED:
        label += f"  {list(tensor.shape_a or ())} → {list(tensor.shape_b or ())}"
    if tensor.status is TensorStatus.DTYPE_CHANGED:
        label += f"  {tensor.dtype_a} → {tensor.dtype_b}"
    return label


def _mismatched(tensor: TensorDiff) -> str:
    if tensor.mismatched is None:
        return ""
    fraction = tensor.mismatched_fraction or 0.0
    return f"{tensor.mismatched:,} ({fraction:.1%})"


def _metadata_section(diff: Diff) -> RenderableType:
    counts = "counted, --strict" if diff.options.strict else "not counted"
    table = Table(title=f"Metadata ({counts})", title_justify="left")
    for column in ("entry", "A", "B"):
        table.add_column(column, overflow="fold")
    for change in diff.metadata:
        table.add_row(change.path, _value(change.a), _value(change.b))
    return table


def render_verify(verify: Verify) -> RenderableType:
    """One line of verdict, then one row per format, then predictions."""
    verdict = "verified" if verify.exit_code == 0 else "verification failed"
    parts: list[RenderableType] = [
        Text(
            f"{verdict}: {verify.file}",
            style="bold green" if verify.exit_code == 0 else "bold red",
        )
    ]
    table = Table(title="Round trips", title_justify="left")
    for column in ("format", "status", "arch", "names", "dtypes", "shapes", "bytes"):
        table.add_column(column, no_wrap=True)
    notes = Text()
    for check in verify.formats:
        table.add_row(
            check.format,
            Text(check.status.value, style=_VERIFY_STYLE[check.status]),
            _flag(check.architecture),
            _flag(check.names),
            _flag(check.dtypes),
            _flag(check.shapes),
            _flag(check.bytes),
        )
        for line in _notes(check):
            notes.append(f"{check.format}: ", style="bold")
            notes.append(line + "\n", style=_VERIFY_STYLE[check.status])
    parts.append(table)
    if notes:
        notes.rstrip()
        parts.append(notes)
    if verify.predict is not None:
        parts.append(_predict_section(verify))
    return Group(*parts)


def _notes(check: FormatCheck) -> list[str]:
    notes = list(check.problems)
    if check.status is not VerifyStatus.SKIPPED:
        notes = [f"lost: {loss}" for loss in check.lost] + notes
    if len(notes) > MAX_NOTES:
        notes = notes[:MAX_NOTES] + [f"... {len(notes) - MAX_NOTES} more (--json)"]
    if check.reason:
        notes.insert(0, check.reason)
    notes += list(check.notes)
    if check.migrations:
        notes.append("migrations: " + ", ".join(check.migrations))
    return notes


def _flag(value: bool | None) -> Text:
    if value is None:
        return Text("")
    return Text("yes", style="green") if value else Text("no", style="red")


def _predict_section(verify: Verify) -> RenderableType:
    predict = verify.predict
    assert predict is not None
    if not predict.checks:
        return Text(f"Predictions: {predict.status} ({predict.reason})")
    table = Table(title=f"Predictions: {predict.status}", title_justify="left")
    for column in ("format", "status", "max |a-b|", "notes"):
        table.add_column(column)
    for check in predict.checks:
        table.add_row(
            check.format,
            Text(check.status.value, style=_VERIFY_STYLE[check.status]),
            _float(check.max_abs_diff),
            check.message or "",
        )
    if predict.reason:
        table.caption = predict.reason
    return table
