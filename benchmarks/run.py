"""modelconv's benchmark: wall time and peak memory beside baselines.

Run from the repository root:

    python benchmarks/run.py --sizes 256M,1G [--repeat 3] [--out docs/performance.md]

For each size it builds a Keras legacy HDF5 model of 4096x4096 Dense layers,
then times, in one run and on a warm page cache: a streamed copy of the file
(the floor), the naive h5py-to-npz script, Keras load_model + save (when Keras
is installed), and the modelconv commands. Every command runs in its own
process; peak memory is that process's maximum resident set size (from
wait4). Each output is flushed to disk once at the end, by modelconv and by
the copy alike. The median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from make_model import UNITS, write_model  # noqa: E402

MiB = 2**20
LARGEST_TENSOR = UNITS * UNITS * 4

SIZES = {"256M": 4, "1G": 16, "4G": 64}


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]
    output: Path | None
    # (max ratio to the copy, max peak MiB) or None where no target is set.
    target: tuple[float | None, float | None] | None = None


@dataclass(frozen=True)
class Measure:
    seconds: float
    peak_mib: float
    ok: bool
    error: str = ""


def run_once(case: Case) -> Measure:
    if case.output is not None:
        remove(case.output)
    started = time.perf_counter()
    process = subprocess.Popen(
        case.argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert process.stderr is not None
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    error = process.stderr.read().decode(errors="replace").strip()
    process.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux.
    return Measure(seconds, usage.ru_maxrss / 1024, code in (0, 1), error[-300:])


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
    model: Path, other: Path, npz: Path, work: Path, keras: bool
) -> list[Case]:
    out = work / "out"
    bound = (LARGEST_TENSOR / MiB) + 150
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
    cases += [
        Case("modelconv inspect", mc("inspect", model, "--json"), None, (None, 150)),
        Case(
            "modelconv convert h5 -> npz",
            mc("convert", model, out.with_suffix(".npz")),
            out.with_suffix(".npz"),
            (2.0, bound),
        ),
        Case(
            "modelconv convert npz -> h5",
            mc("convert", npz, out.with_suffix(".h5")),
            out.with_suffix(".h5"),
            (2.0, bound),
        ),
        Case(
            "modelconv convert h5 -> joblib",
            mc("convert", model, out.with_suffix(".joblib")),
            out.with_suffix(".joblib"),
            (2.0, bound),
        ),
        Case(
            "modelconv convert h5 -> pickle",
            mc("convert", model, out.with_suffix(".pkl")),
            out.with_suffix(".pkl"),
            (2.0, bound),
        ),
        Case(
            "modelconv convert h5 -> json",
            mc("convert", model, out.with_suffix(".json")),
            out.with_suffix(".json"),
            (4.0, bound),
        ),
        Case(
            "modelconv convert h5 -> tfjs",
            mc("convert", model, work / "out_tfjs", "--to", "tfjs"),
            work / "out_tfjs",
            (4.0, bound),
        ),
        Case(
            "modelconv diff (two models)",
            mc("diff", model, other, "--json"),
            None,
            (2.5, 400),
        ),
        Case(
            "modelconv verify --via npz",
            mc("verify", model, "--via", "npz", "--json"),
            None,
            None,
        ),
    ]
    return cases


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import h5py
    import numpy

    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, numpy {numpy.__version__}, "
        f"h5py {h5py.__version__}"
    )


def fmt_target(case: Case, ratio: float, peak: float) -> str:
    if case.target is None:
        return ""
    max_ratio, max_peak = case.target
    wanted = []
    passed = True
    if max_ratio is not None:
        wanted.append(f"<= {max_ratio:g}x")
        passed &= ratio <= max_ratio
    if max_peak is not None:
        wanted.append(f"<= {max_peak:.0f} MiB")
        passed &= peak <= max_peak
    return ("met" if passed else "MISSED") + " (" + ", ".join(wanted) + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256M,1G")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--no-keras", action="store_true")
    args = parser.parse_args()

    keras = not args.no_keras and shutil.which(sys.executable) is not None
    if keras:
        keras = (
            subprocess.run(py("-c", "import keras"), capture_output=True).returncode
            == 0
        )
    args.work.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Performance",
        "",
        f"Machine: {machine()}.",
        "",
        "Measured by `python benchmarks/run.py --sizes "
        f"{args.sizes} --repeat {args.repeat}`, median of {args.repeat} runs, warm "
        "page cache. Each command runs in its own process; peak is its maximum "
        "resident set size. Every output (modelconv's and the copy's) is flushed "
        "to disk once, at the end. Ratios are to the streamed copy of the same "
        "file in the same run. The models are Sequential stacks of 4096x4096 "
        "Dense layers in the Keras legacy HDF5 layout (largest tensor 64 MiB).",
        "",
    ]
    for size in args.sizes.split(","):
        n_layers = SIZES[size]
        model = args.work / f"model_{size}.h5"
        other = args.work / f"model_{size}_b.h5"
        npz = args.work / f"model_{size}.npz"
        for path, seed in ((model, 0), (other, 1)):
            if not path.exists():
                print(f"building {path} ...", file=sys.stderr)
                write_model(path, n_layers, seed)
        if not npz.exists():
            subprocess.run(mc("convert", model, npz), check=True, cwd=ROOT)
        file_mib = model.stat().st_size / MiB
        lines += [
            f"## {size}: {n_layers} layers, {file_mib:.0f} MiB file",
            "",
            "| what | wall time (s) | x copy | peak RSS (MiB) | target |",
            "|---|---:|---:|---:|---|",
        ]
        copy_seconds = None
        for case in cases_for(model, other, npz, args.work, keras and size != "4G"):
            runs = [run_once(case) for _ in range(args.repeat)]
            failed = [r for r in runs if not r.ok]
            seconds = statistics.median(r.seconds for r in runs)
            peak = max(r.peak_mib for r in runs)
            if copy_seconds is None:
                copy_seconds = seconds
            ratio = seconds / copy_seconds
            note = fmt_target(case, ratio, peak)
            if failed:
                note = "FAILED: " + failed[0].error.splitlines()[-1][:120]
            print(
                f"{size} {case.name}: {seconds:.2f}s x{ratio:.2f} {peak:.0f}MiB {note}",
                file=sys.stderr,
            )
            lines.append(
                f"| {case.name} | {seconds:.2f} | {ratio:.2f} | {peak:.0f} | {note} |"
            )
            if case.output is not None:
                remove(case.output)
        lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
