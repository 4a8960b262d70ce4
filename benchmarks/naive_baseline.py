"""The naive script people write: h5py reads every dataset, then np.savez."""

from __future__ import annotations

import os
import sys

import h5py
import numpy as np


def main(src: str, dst: str) -> None:
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(src, "r") as f:

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                arrays[name] = obj[()]

        f.visititems(visit)
    np.savez(dst, **arrays)
    with open(dst, "rb+") as handle:
        os.fsync(handle.fileno())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
