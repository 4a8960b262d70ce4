"""Safety limits, each with the reason for its value.

Every reader validates declared sizes against these before allocating.
"""

from __future__ import annotations

# A declared total beyond this is refused before any work. 64 GiB is larger
# than any single legacy Keras artifact seen in the wild, yet far below the
# terabyte claims hostile headers make. Overridden by --max-bytes.
DEFAULT_MAX_BYTES = 64 * 2**30

# The non-array part of a pickle (dict keys, configs, metadata) is small in
# every real file; 256 MiB leaves room for huge configs and stops memo bombs.
MAX_PICKLE_STRUCTURE_BYTES = 256 * 2**20

# Keras configs nest a few dozen levels; 200 is generous and keeps recursive
# walkers far from Python's recursion limit.
MAX_JSON_DEPTH = 200

# A model.json or config.json over 512 MiB is not a config; weights are never
# inline except in modelconv JSON, whose reader streams instead.
MAX_JSON_DOCUMENT_BYTES = 512 * 2**20

# Python refuses int() on strings over 4300 digits by default; configs never
# need more than 20.
MAX_JSON_INT_DIGITS = 100

# Real models have at most tens of thousands of layers and groups.
MAX_HDF5_OBJECTS = 200_000
MAX_HDF5_DEPTH = 64

# Zip members: a stored/deflated member may claim at most this ratio of
# uncompressed to compressed size (zeros deflate ~1000:1; bombs far beyond).
MAX_ZIP_RATIO = 2000
MAX_ZIP_MEMBERS = 100_000

# Chunk size used to stream tensors: big enough to amortise call overhead,
# small enough to keep memory flat. Measured on 1 GiB of float32 (h5py
# reading every dataset in slabs, page cache warm): 16 MiB pieces took 0.3
# to 0.45 s, 4 MiB pieces 0.14 s. Pieces that large are mapped afresh and
# faulted in page by page on each allocation; the kernel time that costs
# grew with the piece, and 8 MiB is also the copy baseline's block.
CHUNK_BYTES = 8 * 2**20
