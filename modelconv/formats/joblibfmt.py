"""joblib dumps: plain, or compressed with zlib, gzip, bz2, lzma, xz or lz4.

A joblib file is a pickle stream in which each numpy array is a
``NumpyArrayWrapper`` followed by the array's raw bytes; a compressed file is
that stream inside the compressor joblib chose (detected by magic bytes).
Reading is shared with the pickle format (``pickles.read_model``); writing
uses joblib's own array layout so ``joblib.load`` opens the result.
"""

from __future__ import annotations

from pathlib import Path

from ..model import Model
from ..picklewrite import check_compress, compression_for, open_compressor
from . import pickles
from .base import Loss, Probe, ReadOptions, WriteOptions
from .pickles import compression_of, decompressed_head, pickle_score, read_model

FORMAT = "joblib"


def sniff(probe: Probe) -> int:
    if probe.is_dir or not probe.head:
        return 0
    score = pickle_score(probe.head, probe.size)
    if score:
        # A joblib dump without arrays (a pickled Keras model) is a plain
        # pickle: just below the pickle format, so a .joblib suffix decides.
        return 95 if b"joblib.numpy_pickle" in probe.head[:4096] else score - 2
    compressor = compression_of(probe.head)
    if compressor is None:
        return 0
    head = decompressed_head(probe, compressor)
    if not head:
        return 0
    inner = pickle_score(head, len(head) + 1)
    if inner >= 90:
        return 90
    return 50 if inner else 0


def read(path: Path, options: ReadOptions) -> Model:
    return read_model(path, options, FORMAT)


def prepare(model: Model, options: WriteOptions) -> Model:
    return pickles.prepare(model, options)


def losses(model: Model, options: WriteOptions) -> list[Loss]:
    if options.compress is not None:
        check_compress(options.compress)
    return pickles.losses(model, options)


def write(model: Model, path: Path, options: WriteOptions) -> None:
    compress = options.compress
    if compress is None:
        implied = compression_for(path.name)
        compress = (implied, None) if implied else None
    with open(path, "wb") as out:
        if compress is None:
            pickles.write_stream(model, out, path, options, joblib_arrays=True)
            return
        name, level = check_compress(compress)
        with open_compressor(out, name, level) as stream:
            # joblib lets compressed arrays be read but never memory-mapped.
            pickles.write_stream(
                model, stream, path, options, joblib_arrays=True, allow_mmap=False
            )
