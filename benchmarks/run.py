"""modelconv's benchmark: wall time and peak memory beside baselines.

Run from the repository root:

    python benchmarks/run.py --sizes 256M,1G [--repeat 3] [--out docs/performance.md]

For each size it builds a Keras legacy HDF5 model of 4096x4096 Dense layers,
then times, in one run and on a warm page cache: a streamed copy of the file
(the floor), the naive h5py-to-npz script, Keras load_model + save (when Keras
is installed), and the modelconv commands. Every command runs in its own
process, started by benchmarks/measure.py; peak memory is that process's
maximum resident set size (from wait4). Each output is flushed to disk once
at the end, by modelconv and by the copy alike. The median of the repeats is
reported. It is not part of the test suite: nothing here is collected by
pytest.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from make_model import LAYER_BYTES, UNITS  # noqa: E402

MiB = 2**20
GiB = 2**30
LARGEST_TENSOR = UNITS * UNITS * 4

SIZES = {"256M": 4, "1G": 16, "4G": 64}
TARGET_SIZE = "1G"  # the size the performance targets are set for
# Disk needed per byte of model: the model, the second model for diff, its
# npz, and the largest output (JSON base64, 4/3) with some room.
DISK_FACTOR = 5.0
SMALL_MODEL = ROOT / "fixtures" / "k3_iris_mlp.h5"


@dataclass(frozen=True)
class Target:
    ratio: float | None = None  # at most this many times the copy
    peak_mib: float | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]
    output: Path | None
    target: Target | None = None
    codes: tuple[int, ...] = (0,)  # the exit codes that mean it worked


@dataclass(frozen=True)
class Measure:
    seconds: float
    peak_mib: float
    code: int
    error: str


@dataclass
class Result:
    case: Case
    seconds: float
    peak_mib: float
    ratio: float | None
    failed: str


def run_once(case: Case, work: Path, env: dict[str, str]) -> Measure:
    if case.output is not None:
        remove(case.output)
    err = work / "stderr.txt"
    done = subprocess.run(
        py(HERE / "measure.py", err, *case.argv),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
    )
    seconds, kib, code = done.stdout.split()
    error = err.read_text(errors="replace").strip()
    err.unlink()
    return Measure(float(seconds), int(kib) / 1024, int(code), error[-300:])


def measure(case: Case, repeat: int, work: Path, env: dict[str, str]) -> Result:
    return summarise(case, [run_once(case, work, env) for _ in range(repeat)])


def measure_rounds(
    cases: list[Case], repeat: int, work: Path, env: dict[str, str]
) -> list[Result]:
    """Each case once per round, rounds one after another.

    Interleaved, so that a slow spell of the disk (write-back of an earlier
    output, another process) falls on the copy and on modelconv alike
    instead of on every repeat of one case.
    """
    runs: list[list[Measure]] = [[] for _ in cases]
    for round_no in range(repeat):
        for case, done in zip(cases, runs):
            done.append(run_once(case, work, env))
            print(
                f"  round {round_no + 1}/{repeat} {case.name}: {done[-1].seconds:.2f}s",
                file=sys.stderr,
                flush=True,
            )
    return [summarise(case, done) for case, done in zip(cases, runs)]


def summarise(case: Case, runs: list[Measure]) -> Result:
    if case.output is not None:
        remove(case.output)
    bad = [r for r in runs if r.code not in case.codes]
    failed = ""
    if bad:
        last = (bad[0].error.splitlines() or [""])[-1]
        failed = f"FAILED (exit {bad[0].code}): {last[:120]}"
    return Result(
        case,
        statistics.median(r.seconds for r in runs),
        max(r.peak_mib for r in runs),
        None,
        failed,
    )


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def py(*args: str | Path) -> list[str]:
    return [sys.executable, *map(str, args)]


def mc(*args: str | Path) -> list[str]:
    return py("-m", "modelconv", *args)


def cases_for(
    model: Path, other: Path, npz: Path, work: Path, keras: bool, targets: bool
) -> list[Case]:
    """The cases for one model size; ``targets``: check the targets there.

    The targets are set on the 1 GiB model (the performance issue's table).
    At 256 MiB a copy takes a quarter of a second, about as long as starting
    Python and importing numpy and h5py, so a ratio there measures start-up
    more than throughput; the growth table shows how cost scales instead.
    """
    out = work / "out"
    bound = (LARGEST_TENSOR / MiB) + 150
    fast = Target(2.0, bound) if targets else None
    text = Target(4.0, bound) if targets else None
    cases = [
        Case(
            "copy (floor)",
            py(HERE / "copy_baseline.py", model, out.with_suffix(".copy")),
            out.with_suffix(".copy"),
        ),
        Case(
            "naive h5py -> np.savez",
            py(HERE / "naive_baseline.py", model, out.with_suffix(".naive.npz")),
            out.with_suffix(".naive.npz"),
        ),
    ]
    if keras:
        cases += [
            Case(
                "Keras load_model + save .keras",
                py(
                    HERE / "keras_baseline.py",
                    "convert",
                    model,
                    out.with_suffix(".k.keras"),
                ),
                out.with_suffix(".k.keras"),
            ),
            Case(
                "Keras load_model + summary",
                py(HERE / "keras_baseline.py", "inspect", model),
                None,
            ),
        ]

    def convert(label: str, src: Path, dst: Path, *extra: str) -> Case:
        target = text if label.endswith(("json", "tfjs")) else fast
        return Case(
            f"modelconv convert {label}", mc("convert", src, dst, *extra), dst, target
        )

    cases += [
        Case(
            "modelconv inspect",
            mc("inspect", model, "--json"),
            None,
            Target(None, 150, 0.8) if targets else None,
        ),
        convert("h5 -> npz", model, out.with_suffix(".npz")),
        convert("npz -> h5", npz, out.with_suffix(".h5")),
        convert("h5 -> joblib", model, out.with_suffix(".joblib")),
        convert("h5 -> pickle", model, out.with_suffix(".pkl")),
        convert("h5 -> json", model, out.with_suffix(".json")),
        convert("h5 -> tfjs", model, work / "out_tfjs", "--to", "tfjs"),
        Case(
            "modelconv diff (two models)",
            mc("diff", model, other, "--json"),
            None,
            Target(2.5, 400) if targets else None,
            codes=(1,),  # the two models differ in every weight
        ),
        Case(
            "modelconv verify --via npz",
            mc("verify", model, "--via", "npz", "--json"),
            None,
        ),
    ]
    return cases


def startup_cases() -> list[Case]:
    kib = SMALL_MODEL.stat().st_size // 1024
    return [
        Case("modelconv --help", mc("--help"), None, Target(None, None, 0.5)),
        Case(
            f"modelconv inspect {SMALL_MODEL.name} ({kib} KiB)",
            mc("inspect", SMALL_MODEL),
            None,
            Target(None, None, 0.5),
        ),
        Case("python -c pass (interpreter floor)", py("-c", "pass"), None),
    ]


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def disk(work: Path) -> str:
    """The work folder's file system: device, type, size, free, rotational."""
    where = work.resolve()
    best = ("?", "?", "")
    for line in _read("/proc/mounts").splitlines():
        device, mount, fstype, *_ = line.split()
        inside = where == Path(mount) or Path(mount) in where.parents
        if inside and len(mount) >= len(best[2]):
            best = (device, fstype, mount)
    device, fstype, _ = best
    usage = shutil.disk_usage(where)
    name = Path(device).name.rstrip("0123456789") if device.startswith("/dev/") else ""
    rota = _read(f"/sys/block/{name}/queue/rotational") if name else ""
    kind = {"0": ", non-rotational", "1": ", reported rotational"}.get(rota, "")
    return (
        f"{device} ({fstype}{kind}), {usage.total / GiB:.0f} GiB, "
        f"{usage.free / GiB:.0f} GiB free at the start"
    )


def machine(work: Path, keras: str | None) -> list[str]:
    cpu = "unknown CPU"
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    import h5py
    import numpy

    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    now = datetime.datetime.now(datetime.timezone.utc)
    return [
        f"- Date: {now:%Y-%m-%d %H:%M} UTC; modelconv at `{commit or 'unknown'}`",
        f"- CPU: {cpu}, {os.cpu_count()} cores",
        f"- RAM: {memory:.0f} GiB",
        f"- Disk: {disk(work)}",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, numpy {numpy.__version__}, "
        f"h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), "
        f"Keras {keras or 'not installed'}",
    ]


def check(result: Result) -> tuple[str, bool]:
    """The target column, and whether the target was met."""
    target = result.case.target
    if result.failed:
        return result.failed, False
    if target is None:
        return "", True
    wanted = []
    passed = True
    if target.seconds is not None:
        wanted.append(f"<= {target.seconds:g} s")
        passed &= result.seconds <= target.seconds
    if target.ratio is not None:
        wanted.append(f"<= {target.ratio:g}x")
        passed &= result.ratio is not None and result.ratio <= target.ratio
    if target.peak_mib is not None:
        wanted.append(f"<= {target.peak_mib:.0f} MiB")
        passed &= result.peak_mib <= target.peak_mib
    return ("met" if passed else "MISSED") + " (" + ", ".join(wanted) + ")", passed


def row(result: Result, label: str | None = None) -> str:
    note, _ = check(result)
    ratio = "" if result.ratio is None else f"{result.ratio:.2f}"
    return (
        f"| {label or result.case.name} | {result.seconds:.2f} | {ratio} | "
        f"{result.peak_mib:.0f} | {note} |"
    )


def report(name: str, result: Result) -> None:
    note, _ = check(result)
    ratio = "" if result.ratio is None else f" x{result.ratio:.2f}"
    print(
        f"{name} {result.case.name}: {result.seconds:.2f}s{ratio} "
        f"{result.peak_mib:.0f}MiB {note}",
        file=sys.stderr,
        flush=True,
    )


def build(size: str, model: Path, other: Path, npz: Path, env: dict) -> None:
    # In a child process, so that this one stays small.
    for path, seed in ((model, 0), (other, 1)):
        if not path.exists():
            print(f"building {path} ...", file=sys.stderr, flush=True)
            code = (
                "import sys; sys.path.insert(0, sys.argv[1]); "
                "from make_model import write_model; "
                "write_model(__import__('pathlib').Path(sys.argv[2]), "
                "int(sys.argv[3]), int(sys.argv[4]))"
            )
            subprocess.run(
                py("-c", code, HERE, path, SIZES[size], seed), check=True, env=env
            )
    if not npz.exists():
        subprocess.run(mc("convert", model, npz), check=True, cwd=ROOT, env=env)


def warm(*paths: Path) -> None:
    """Read the inputs once, so that every command starts on a warm cache."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(16 * MiB):
                pass


def child_env(work: Path) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # Bytecode as an installed package has it, cached outside the tree; without
    # it every run would compile modelconv's sources again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256M,1G", help="of 256M, 1G, 4G")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument(
        "--keras-sizes",
        default="256M,1G",
        help="sizes at which to run the Keras baseline (default 256M,1G: at "
        "4G it needs several times the model in memory and minutes per run)",
    )
    parser.add_argument(
        "--clean", action="store_true", help="delete the built models at the end"
    )
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(SIZES)}")

    args.work.mkdir(parents=True, exist_ok=True)
    env = child_env(args.work)
    keras_version = None
    if not args.no_keras:
        found = subprocess.run(
            py("-c", "import keras; print(keras.__version__)"),
            capture_output=True,
            text=True,
            env=env,
        )
        if found.returncode == 0:
            keras_version = found.stdout.strip().splitlines()[-1]
    # Warm-up: writes the bytecode cache (under --work) before anything is timed.
    for warmup in (mc("--help"), mc("inspect", SMALL_MODEL), mc("formats")):
        subprocess.run(warmup, capture_output=True, cwd=ROOT, env=env)
    lines = [
        "# Performance",
        "",
        "Written by `python benchmarks/run.py --sizes "
        f"{args.sizes} --repeat {args.repeat}`.",
        "",
        "Machine:",
        "",
        *machine(args.work, keras_version),
        "",
        f"Method: median of {args.repeat} runs on a warm page cache (the inputs "
        "are read once, and the disk synced, before each size), in rounds: "
        "each command once per round, so that a slow spell of the disk falls "
        "on the copy and on modelconv alike. Each command "
        "runs in its own process; its peak is its maximum resident set size "
        "(wait4, taken in a small launcher so that the benchmark's own memory "
        "is not counted). **fsync policy: every output, modelconv's and the "
        "copy's, is flushed to disk once, at the end** (the naive script "
        "likewise fsyncs its output once; Keras does not fsync). Ratios are to "
        "the streamed copy (8 MiB blocks) of the same file in the same run. "
        "modelconv's read-back check compares crc32 checksums computed while "
        "writing; it reads the output, never the source again. The models are "
        "Sequential stacks of 4096x4096 Dense layers in the Keras legacy HDF5 "
        f"layout, random float32 weights (largest tensor {LARGEST_TENSOR // MiB}"
        f" MiB, so the convert memory bound is {LARGEST_TENSOR // MiB + 150} "
        "MiB). diff compares two models of the same shape whose every weight "
        f"differs. The targets are those set for the {TARGET_SIZE} model; at "
        "other sizes the ratios are shown without them (at 256 MiB a copy "
        "takes about as long as starting Python with numpy and h5py), and the "
        "growth table shows how cost scales.",
        "",
    ]
    all_results: dict[str, list[Result]] = {}
    missed: list[str] = []

    startup = []
    for case in startup_cases():
        result = measure(case, max(5, args.repeat), args.work, env)
        report("startup", result)
        startup.append(result)
        if not check(result)[1]:
            missed.append(f"startup: {case.name}")
    lines += [
        f"## Startup (median of {max(5, args.repeat)})",
        "",
        "| what | wall time (s) | x copy | peak RSS (MiB) | target |",
        "|---|---:|---:|---:|---|",
        *(row(r) for r in startup),
        "",
    ]

    for size in sizes:
        n_layers = SIZES[size]
        model = args.work / f"model_{size}.h5"
        other = args.work / f"model_{size}_b.h5"
        npz = args.work / f"model_{size}.npz"
        need = n_layers * LAYER_BYTES * DISK_FACTOR
        have = sum(p.stat().st_size for p in (model, other, npz) if p.exists())
        if shutil.disk_usage(args.work).free + have < need:
            note = f"## {size}: skipped, {need / GiB:.0f} GiB of free disk needed"
            print(note, file=sys.stderr)
            lines += [note, ""]
            continue
        build(size, model, other, npz, env)
        warm(model, other, npz)
        os.sync()  # no write-back of the build left to slow the first fsync
        keras = keras_version is not None and size in args.keras_sizes.split(",")
        file_mib = model.stat().st_size / MiB
        lines += [
            f"## {size}: {n_layers} layers, {file_mib:.0f} MiB file",
            "",
            "| what | wall time (s) | x copy | peak RSS (MiB) | target |",
            "|---|---:|---:|---:|---|",
        ]
        results = []
        measured = measure_rounds(
            cases_for(model, other, npz, args.work, keras, size == TARGET_SIZE),
            args.repeat,
            args.work,
            env,
        )
        copy_seconds = measured[0].seconds
        for result in measured:
            result.ratio = result.seconds / copy_seconds
            report(size, result)
            results.append(result)
            lines.append(row(result))
            if not check(result)[1]:
                missed.append(f"{size}: {case.name}")
        all_results[size] = results
        lines.append("")
        if keras_version is not None and not keras:
            lines += [
                f"Keras baseline not run at {size} (`--keras-sizes "
                f"{args.keras_sizes}`).",
                "",
            ]

    if len(all_results) > 1:
        lines += linearity(all_results)
    lines += ["## Targets", ""]
    if missed:
        lines += [f"Missed: {', '.join(missed)}.", ""]
    else:
        lines += ["Every target above was met in this run.", ""]
    lines += kept_notes(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    if args.clean:
        for size in sizes:
            for name in (f"model_{size}.h5", f"model_{size}_b.h5", f"model_{size}.npz"):
                remove(args.work / name)
        remove(args.work / "pycache")


NOTES = "## Notes"


def kept_notes(out: Path) -> list[str]:
    """The hand-written "## Notes" section of the previous report, if any.

    Explanations of missed targets (with their profiles) are written by hand
    under that heading at the end of the file; a new run keeps them.
    """
    try:
        text = out.read_text()
    except OSError:
        return []
    at = text.find("\n" + NOTES + "\n")
    return text[at + 1 :].rstrip("\n").splitlines() + [""] if at >= 0 else []


def linearity(all_results: dict[str, list[Result]]) -> list[str]:
    """Seconds per GiB and peak memory at each size, side by side."""
    sizes = list(all_results)
    gib = {s: SIZES[s] * LAYER_BYTES / GiB for s in sizes}
    lines = [
        "## Growth with model size",
        "",
        "Wall time per GiB of model (s/GiB) and peak RSS (MiB) at each size; "
        "constant s/GiB means cost linear in size. The last column is "
        f"s/GiB at {sizes[-1]} over s/GiB at {sizes[0]}.",
        "",
        "| what | "
        + " | ".join(f"{s} s/GiB | {s} MiB" for s in sizes)
        + f" | {sizes[-1]}/{sizes[0]} |",
        "|---|" + "---:|" * (2 * len(sizes) + 1),
    ]
    names = [r.case.name for r in all_results[sizes[0]]]
    for name in names:
        cells = []
        per = {}
        for size in sizes:
            found = [r for r in all_results[size] if r.case.name == name]
            if not found:
                cells += ["", ""]
                continue
            per[size] = found[0].seconds / gib[size]
            cells += [f"{per[size]:.2f}", f"{found[0].peak_mib:.0f}"]
        growth = (
            f"{per[sizes[-1]] / per[sizes[0]]:.2f}"
            if sizes[0] in per and sizes[-1] in per
            else ""
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {growth} |")
    return lines + [""]


if __name__ == "__main__":
    main()
