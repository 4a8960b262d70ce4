"""The floor: a streamed copy of a file, flushed to disk once at the end."""

from __future__ import annotations

import os
import sys

CHUNK = 8 * 2**20


def main(src: str, dst: str) -> None:
    with open(src, "rb") as reader, open(dst, "wb") as writer:
        while True:
            block = reader.read(CHUNK)
            if not block:
                break
            writer.write(block)
        writer.flush()
        os.fsync(writer.fileno())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
