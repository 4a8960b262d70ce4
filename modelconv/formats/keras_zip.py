"""The Keras v3 zip archive (``.keras``), as Keras 3 and tf_keras write it.

An archive holds ``metadata.json`` (``keras_version``, ``date_saved``),
``config.json`` (the model config, plus ``compile_config`` when compiled)
and ``model.weights.h5``, which Keras stores uncompressed and modelconv
reads in place (see ``_open_weights``).

Inside ``model.weights.h5`` every saveable object is a group holding its own
variables in ``vars/0``, ``vars/1``... and its children below: the model's
layers in ``layers/<key>``, the optimizer in ``optimizer``, metrics and
other state elsewhere. Keys are the snake_case class name deduplicated with
``_1``, ``_2`` in the order of the model's layers (``saving_lib.
_save_container_state``, Keras 3.0 to 3.15 and tf_keras 2.13 to 2.21);
Keras 3.15 also tags each ``vars`` group with the object's ``name``, which
is used first when present.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import h5py

from .. import keras_config
from ..errors import InputError, ModelconvError, UnsupportedError
from ..jsonsafe import loads_bounded
from ..limits import MAX_JSON_DOCUMENT_BYTES
from ..model import Model, Role, Tensor
from ..ziputil import SafeZip, is_zip, list_names
from . import h5safe
from .base import Loss, Probe, ReadOptions, WriteOptions

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
NPZ_WEIGHTS_MEMBER = "model.weights.npz"

# Wrappers holding a forward and a backward copy of one inner layer.
_WRAPPERS_WITH_TWO_DIRECTIONS = {"Bidirectional"}


# -- sniffing ------------------------------------------------------------


def sniff(probe: Probe) -> int:
    if probe.is_dir or not is_zip(probe.head):
        return 0
    names = list_names(probe.path)
    if names is None:
        return 20 if probe.suffix == ".keras" else 0
    has_json = CONFIG_MEMBER in names or METADATA_MEMBER in names
    if has_json and WEIGHTS_MEMBER in names:
        return 100
    if CONFIG_MEMBER in names and METADATA_MEMBER in names:
        return 90
    if probe.suffix == ".keras" and has_json:
        return 50
    return 0


# -- writing: delegated to the writer module -----------------------------


def _writer() -> Any:
    try:
        from . import keras_zip_writer
    except ModuleNotFoundError as exc:
        if exc.name == f"{__package__}.keras_zip_writer":
            raise UnsupportedError(
                "writing .keras archives is not available yet"
            ) from exc
        raise
    return keras_zip_writer


def prepare(model: Model, options: WriteOptions) -> Model:
    # The migrated model is what gets written, so it is what the core checks
    # the read-back against: a Keras 1 channels_first kernel is transposed.
    return _writer().prepare(model, options)


def write(model: Model, path: Path, options: WriteOptions) -> None:
    _writer().write(model, path, options)


def losses(model: Model, options: WriteOptions) -> list[Loss]:
    return list(_writer().losses(model, options))


# -- reading -------------------------------------------------------------


def read(path: Path, options: ReadOptions) -> Model:
    archive = SafeZip(path, options.max_bytes)
    resources = ExitStack()
    resources.callback(archive.close)
    try:
        return _read(archive, options, resources)
    except BaseException:
        resources.close()
        raise


def _json_member(archive: SafeZip, name: str) -> Any:
    data = archive.read(name, limit=MAX_JSON_DOCUMENT_BYTES)
    return loads_bounded(data, what=f"{name} in {archive.path.name!r}")


def _read(archive: SafeZip, options: ReadOptions, resources: ExitStack) -> Model:
    warnings: list[str] = []
    if CONFIG_MEMBER not in archive.members:
        raise InputError(
            f"{str(archive.path)!r} is a zip without {CONFIG_MEMBER}; it is not "
            "a Keras v3 archive"
        )
    config = _json_member(archive, CONFIG_MEMBER)
    if not isinstance(config, dict):
        raise InputError(
            f"{CONFIG_MEMBER} must hold a JSON object; found {type(config).__name__}"
        )
    metadata_json: dict[str, Any] = {}
    if METADATA_MEMBER in archive.members:
        loaded = _json_member(archive, METADATA_MEMBER)
        metadata_json = loaded if isinstance(loaded, dict) else {}
    else:
        warnings.append(f"the archive has no {METADATA_MEMBER}; Keras version unknown")

    architecture = keras_config.build_architecture(config)
    version = metadata_json.get("keras_version")
    version = str(version) if version is not None else None
    flavour = "tf-keras" if version and version.startswith("2.") else "keras3"
    metadata: dict[str, Any] = {"producer": {"name": "keras", "version": version}}
    if "date_saved" in metadata_json:
        metadata["date_saved"] = metadata_json["date_saved"]
    record = metadata_json.get("modelconv")
    carried = record.get("metadata") if isinstance(record, dict) else None
    if isinstance(carried, dict):
        # Written by modelconv: the source model's own metadata, beside what
        # the archive says about itself.
        metadata.update({k: v for k, v in carried.items() if k not in metadata})
    if config.get("compile_config") is not None:
        metadata["training_config"] = config["compile_config"]

    assets = [n for n in archive.members if n.startswith("assets/")]
    if [n for n in assets if not n.endswith("/")]:
        warnings.append(
            f"the archive holds {len(assets)} asset entries (e.g. {assets[0]!r}); "
            "modelconv does not carry assets"
        )

    tensors: list[Tensor] = []
    if WEIGHTS_MEMBER in archive.members:
        h5file, in_place = _open_weights(archive, resources)
        mapper = _Mapper(h5file, options.max_bytes, read_tags=not in_place)
        tensors = mapper.map(config)
        warnings.extend(mapper.warnings)
    elif NPZ_WEIGHTS_MEMBER in archive.members:
        raise UnsupportedError(
            f"{str(archive.path)!r} keeps its weights in {NPZ_WEIGHTS_MEMBER}, "
            "where Keras stores each layer's variables as a pickled dict; "
            "modelconv never unpickles npz members; re-save it with the default "
            "weights format (h5)"
        )
    else:
        warnings.append(f"the archive has no {WEIGHTS_MEMBER}; no weights read")

    return Model(
        tensors=tuple(tensors),
        architecture=architecture,
        metadata=metadata,
        format="keras",
        flavour=flavour,
        warnings=tuple(warnings),
        resources=resources,
    )


def _open_weights(archive: SafeZip, resources: ExitStack) -> tuple[h5py.File, bool]:
    """The weights HDF5 file, and whether it is read in place.

    Keras stores the member uncompressed, so it is opened in place through a
    byte-range view of the archive: inspecting a 1 GiB archive reads only
    headers. A compressed member is copied, capped at its declared size and
    CRC-checked, to a temporary file. In place, libhdf5 is never asked for a
    variable-length string (h5safe checks global heaps only in real files),
    so layers are matched by their keys, not by the ``name`` tags.
    """
    member = archive.member(WEIGHTS_MEMBER)
    if member.stored:
        try:
            h5file = h5py.File(archive.slice(WEIGHTS_MEMBER), "r")
        except h5safe.H5_ERRORS as exc:
            raise InputError(
                f"{WEIGHTS_MEMBER} in {archive.path.name!r} is not a readable "
                f"HDF5 file ({exc}); the archive is damaged"
            ) from exc
        resources.callback(h5file.close)
        return h5file, True
    folder = resources.enter_context(tempfile.TemporaryDirectory(prefix="modelconv-"))
    copy = Path(folder) / WEIGHTS_MEMBER
    with archive.open(WEIGHTS_MEMBER) as reader, copy.open("wb") as out:
        shutil.copyfileobj(reader, out, 1024 * 1024)
    h5file = h5safe.open_file(copy)
    resources.callback(h5file.close)
    return h5file, False


# -- h5 paths → canonical names ------------------------------------------


def to_snake_case(name: str) -> str:
    """Keras' snake_case of a class name (``keras.src.utils.naming``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def container_keys(class_names: Iterable[str]) -> list[str]:
    """The group keys Keras gives a list of saveables: ``dense``, ``dense_1``..."""
    used: dict[str, int] = {}
    keys = []
    for class_name in class_names:
        key = to_snake_case(class_name)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        keys.append(key)
    return keys


def _segment_key(segment: str) -> tuple[int, int, str]:
    """Keras' save order within an object: own ``vars`` (numerically) first,
    then children by attribute name, private ones (``_x``) last."""
    if segment.isdigit():
        return (0, int(segment), "")
    if segment == "vars":
        return (1, 0, "")
    return (2, 0, "~" + segment if segment.startswith("_") else segment)


def _path_key(path: str) -> tuple[tuple[int, int, str], ...]:
    return tuple(_segment_key(s) for s in path.split("/"))


def _plain_name(path: str) -> str:
    """A fallback name from an h5 path: drop ``layers`` and ``vars`` segments."""
    parts = [p for p in path.split("/") if p not in ("vars", "layers")]
    return "/".join(parts) or path


# Keras 3 MultiHeadAttention keeps its projections in attributes
# _query_dense, _key_dense, _value_dense and _output_dense; its weights are
# named query/, key/, value/ and attention_output/ (layer_weight_names).
_SUBLAYER_ALIASES = {"output_dense": "attention_output"}


def _align(
    rel_paths: Sequence[str], names: list[str] | None
) -> tuple[list[str] | None, str]:
    """Short names for a layer's datasets (paths relative to the layer).

    ``names`` is in Keras' variable order. Datasets in one ``vars`` group
    (own variables, or one child such as an RNN cell) take them in order.
    Datasets spread over several child groups are saved by attribute name,
    not in variable order, so names are matched group by group through
    their first segment; returns (None, reason) when that cannot be done.
    """
    if names is None:
        return None, "its variable order is not known"
    if len(names) != len(rel_paths):
        return None, (
            f"it holds {len(rel_paths)} variables where {len(names)} were expected"
        )
    groups: dict[str, list[int]] = {}
    for index, rel in enumerate(rel_paths):
        groups.setdefault(rel.rpartition("/vars/")[0], []).append(index)
    if len(groups) == 1:
        return list(names), ""
    by_prefix: dict[str, list[str]] = {}
    for name in names:
        head, _, tail = name.partition("/")
        by_prefix.setdefault(head, []).append(tail)
    result: list[str | None] = [None] * len(rel_paths)
    for group, indexes in groups.items():
        key = group.lstrip("_")
        candidates = [key, key.removesuffix("_dense"), _SUBLAYER_ALIASES.get(key)]
        prefix = next((c for c in candidates if c and c in by_prefix), None)
        tails = by_prefix.pop(prefix, []) if prefix else []
        if len(tails) != len(indexes):
            return None, f"its sublayer {group!r} matches none of its weight names"
        for index, tail in zip(indexes, tails):
            result[index] = f"{prefix}/{tail}"
    return [n for n in result if n is not None], ""


def _weight_names(entry: Mapping[str, Any]) -> list[str] | None:
    """Variable short names in Keras order, from keras_config when it knows."""
    names_for = getattr(keras_config, "layer_weight_names", None)
    if names_for is None:
        return None
    try:
        names = names_for(entry)
    except ModelconvError:
        return None
    # An empty list means "unknown class" as well as "no weights"; a layer
    # that has datasets then needs positional names either way.
    return [str(n) for n in names] or None


class _Mapper:
    """Assigns each dataset of ``model.weights.h5`` a canonical name and role."""

    def __init__(self, h5file: h5py.File, max_bytes: int, read_tags: bool) -> None:
        self.h5file = h5file
        self.read_tags = read_tags
        self.max_bytes = max_bytes
        self.warnings: list[str] = []
        self.datasets: dict[str, h5py.Dataset] = {}
        self.groups: dict[str, h5py.Group] = {"": h5file}
        # Indexes, so that looking up a layer's children and datasets costs
        # no scan of the whole file (models with thousands of layers).
        self.children: dict[str, set[str]] = {}
        self.below: dict[str, list[str]] = {}
        for entry in h5safe.walk(h5file):
            parent, _, child = entry.path.rpartition("/")
            self.children.setdefault(parent, set()).add(child)
            if entry.is_group:
                self.groups[entry.path] = entry.obj
                continue
            self.datasets[entry.path] = entry.obj
            ancestor = entry.path
            while "/" in ancestor:
                ancestor = ancestor.rpartition("/")[0]
                self.below.setdefault(ancestor, []).append(entry.path)
        self.assigned: dict[str, tuple[str, Role]] = {}
        self.order: list[str] = []
        self.used_names: set[str] = set()

    # entry points

    def map(self, config: Mapping[str, Any]) -> list[Tensor]:
        inner = config.get("config")
        layers = inner.get("layers") if isinstance(inner, Mapping) else None
        if isinstance(layers, list):
            self._container("layers", layers, "")
        elif any(p.startswith("layers/") for p in self.datasets):
            self.warnings.append(
                f"model class {config.get('class_name')!r} lists no layers in its "
                "config (a subclassed model?); its weights are named by their "
                "HDF5 paths"
            )
        self._leftovers()
        return self._tensors()

    # layers

    def _children(self, path: str) -> list[str]:
        names = self.children.get(path, set())
        return sorted(c for c in names if f"{path}/{c}" in self.groups)

    def _vars_name(self, path: str) -> str | None:
        group = self.groups.get(f"{path}/vars")
        if group is None or not self.read_tags:
            return None
        try:
            value = h5safe.read_attr(group, "name")
            return None if value is None else h5safe.as_text(value, "vars name")
        except InputError:
            return None

    def _container(self, path: str, layers: Sequence[Any], prefix: str) -> None:
        entries = [e for e in layers if isinstance(e, Mapping)]
        children = self._children(path)
        by_name = {_layer_name(e): e for e in entries}
        by_key = dict(zip(container_keys(_class_name(e) for e in entries), entries))
        matched: dict[str, Mapping[str, Any]] = {}
        for child in children:
            tagged = self._vars_name(f"{path}/{child}")
            if tagged is not None and tagged in by_name:
                matched[child] = by_name[tagged]  # Keras 3.15 tags vars groups
            elif child in by_key:
                matched[child] = by_key[child]  # snake_case class keys
            elif child in by_name:
                matched[child] = by_name[child]  # keyed by layer name
        # Layer order, as the config lists them.
        position = {id(e): i for i, e in enumerate(entries)}
        for child in sorted(matched, key=lambda c: position[id(matched[c])]):
            entry = matched[child]
            self._layer(f"{path}/{child}", entry, prefix, _layer_name(entry))

    def _layer(
        self, path: str, entry: Mapping[str, Any], prefix: str, name: str
    ) -> None:
        config = entry.get("config")
        config = config if isinstance(config, Mapping) else {}
        class_name = _class_name(entry)
        if isinstance(config.get("layers"), list):  # a nested model
            start = len(self.order)
            self._generic(f"{path}/vars", entry, prefix, name, own_only=True)
            self._container(f"{path}/layers", config["layers"], f"{prefix}{name}/")
            self._legacy_order(start, entry, f"{prefix}{name}/")
            return
        if class_name in _WRAPPERS_WITH_TWO_DIRECTIONS and isinstance(
            config.get("layer"), Mapping
        ):
            self._bidirectional(path, config, f"{prefix}{name}/")
            return
        self._generic(path, entry, prefix, name)

    def _legacy_order(self, start: int, entry: Mapping[str, Any], prefix: str) -> None:
        """List a nested model's weights trainable first, as legacy HDF5 does.

        The archive keeps them sublayer by sublayer, while a legacy .h5 (and
        its loaders in Keras 3 and tf_keras) lists the nested model's trainable
        weights first: one order for both keeps the IR, verify and the HDF5
        writer in step.
        """
        rank = {n: i for i, n in enumerate(_weight_names(entry) or ())}
        mine = self.order[start:]
        self.order[start:] = sorted(
            mine,
            key=lambda p: rank.get(self.assigned[p][0].removeprefix(prefix), len(rank)),
        )

    def _bidirectional(self, path: str, config: Mapping[str, Any], prefix: str) -> None:
        # Keras (3.x and tf_keras) names the copies forward_<name> and
        # backward_<name>; weights list forward first, then backward.
        inner = config["layer"]
        inner_name = _layer_name(inner)
        forward = "forward_" + inner_name.removeprefix("forward_")
        backward_entry = config.get("backward_layer")
        if isinstance(backward_entry, Mapping):
            backward = _layer_name(backward_entry)
        else:
            backward_entry = inner
            backward = "backward_" + inner_name.removeprefix("backward_")
        self._generic(f"{path}/forward_layer", inner, prefix, forward)
        self._generic(f"{path}/backward_layer", backward_entry, prefix, backward)

    def _generic(
        self,
        path: str,
        entry: Mapping[str, Any],
        prefix: str,
        name: str,
        own_only: bool = False,
    ) -> None:
        """Name a layer's datasets from its known variable order, else by index."""
        below = f"{path}/"
        paths = sorted(
            (p for p in self.below.get(path, ()) if p not in self.assigned),
            key=lambda p: _path_key(p[len(below) :]),
        )
        if own_only:
            paths = [p for p in paths if "/" not in p[len(below) :]]
        state = [p for p in paths if "seed_generator" in p[len(below) :]]
        weights = [p for p in paths if p not in state]
        for p in state:
            self._assign(
                p, f"{prefix}{name}/{_plain_name(p[len(below) :])}", Role.STATE
            )
        if not weights:
            return
        rel = [p[len(below) :] for p in weights]
        names = _weight_names(entry)
        short, why = _align(rel, names)
        if short is None:
            self.warnings.append(
                f"layer {prefix}{name} ({_class_name(entry)}): {why}; its "
                f"weights are named by position ({name}/0, ...)"
            )
            short = [_plain_name(r) for r in rel]
        # Keras' variable order, not the file's (sublayers are saved by
        # attribute name), so that writers list weights as Keras does.
        rank = {n: i for i, n in enumerate(names or ())}
        pairs = sorted(zip(weights, short), key=lambda pw: rank.get(pw[1], 0))
        for p, weight in pairs:
            self._assign(p, f"{prefix}{name}/{weight}", Role.WEIGHT)

    # everything else

    def _leftovers(self) -> None:
        rest = [p for p in self.datasets if p not in self.assigned]
        unmatched_layers = sorted(
            {p.split("/vars/")[0] for p in rest if p.startswith("layers/")}
        )
        if unmatched_layers:
            self.warnings.append(
                "weights of HDF5 groups "
                + ", ".join(repr(g) for g in unmatched_layers[:5])
                + (" ..." if len(unmatched_layers) > 5 else "")
                + " match no layer of the config; they are named by their paths"
            )
        for p in sorted(rest, key=_path_key):
            top = p.split("/", 1)[0]
            name = _plain_name(p)
            if top == "optimizer":
                role = Role.OPTIMIZER
            elif top == "vars":  # the model's own variables (subclassed models)
                role, name = Role.WEIGHT, p
            elif top == "layers" and "seed_generator" not in p:
                role = Role.WEIGHT
            else:
                role = Role.STATE  # metrics, seed generators, loss trackers
            self._assign(p, name, role)

    def _assign(self, path: str, name: str, role: Role) -> None:
        if name in self.used_names:
            self.warnings.append(
                f"two weights map to {name!r}; the one at {path!r} keeps its "
                "HDF5 path as its name"
            )
            name = path
        self.used_names.add(name)
        self.assigned[path] = (name, role)
        self.order.append(path)

    def _tensors(self) -> list[Tensor]:
        tensors = []
        total = 0
        weights_first = sorted(
            self.order, key=lambda p: list(Role).index(self.assigned[p][1])
        )
        for path in weights_first:
            name, role = self.assigned[path]
            where = f"{WEIGHTS_MEMBER}/{path}"
            try:
                # Keras 3 writes bfloat16 as 2-byte opaque data (ml_dtypes
                # through h5py); no other 2-byte opaque type occurs there.
                info = h5safe.check_dataset(
                    self.datasets[path], where, opaque2_is_bfloat16=True
                )
            except h5safe.SkippedDataset as exc:
                self.warnings.append(str(exc))
                continue
            total += info.nbytes
            h5safe.check_limit(total, self.max_bytes, WEIGHTS_MEMBER)
            tensors.append(
                Tensor(
                    name=name,
                    dtype=info.dtype,
                    shape=info.shape,
                    role=role,
                    source_names=(path,),
                    source=h5safe.H5Source(self.datasets[path], info, where),
                )
            )
        return tensors


def _class_name(entry: Mapping[str, Any]) -> str:
    value = entry.get("class_name")
    return value if isinstance(value, str) else ""


def _layer_name(entry: Mapping[str, Any]) -> str:
    config = entry.get("config")
    name = config.get("name") if isinstance(config, Mapping) else None
    if isinstance(name, str):
        return name
    name = entry.get("name")
    return name if isinstance(name, str) else to_snake_case(_class_name(entry))
