"""Keras itself: load_model, then save as .keras (or summary() for inspect)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(mode: str, src: str, dst: str | None = None) -> None:
    import keras

    model = keras.models.load_model(src, compile=False)
    if mode == "inspect":
        model.summary(print_fn=lambda *a, **k: None)
    else:
        model.save(dst)


if __name__ == "__main__":
    main(*sys.argv[1:])
