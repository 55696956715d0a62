"""Metric points stored column by column, with one string dictionary per record.

A window can hold thousands of points whose property strings repeat (``what``, ``stat``,
feature names). Columns of int32 indices into one list of distinct strings, plus packed
float64 values, decode with ``np.frombuffer`` instead of one Avro record per point.
"""

from __future__ import annotations

import functools
import json
import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlwatcher.point import Point, PointBlock
from mlwatcher.schemas.codec import SchemaDecodeError

TARGET_TYPES = ("gauge", "counter")
_INDEX_COLUMNS = ("what", "class_name", "feat_name", "stat", "extra")
_INDEX = np.dtype("<i4")
_VALUE = np.dtype("<f8")
_COLUMN_TYPES = {**{name: _INDEX for name in _INDEX_COLUMNS}, "target_type": np.dtype(np.uint8)}
_COLUMNS = tuple(_COLUMN_TYPES)
_SMALL_BLOCK = 48  # points: list items cost ~25 ns to convert, a NumPy call ~1 us


def extra_json(extra: Any) -> str:
    """Canonical JSON of an extra-properties mapping (sorted keys, no spaces)."""
    return json.dumps(dict(extra), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class PointColumns:
    strings: list[str]
    what: np.ndarray  # int32 indices into strings
    class_name: np.ndarray  # int32, -1 = absent
    feat_name: np.ndarray
    stat: np.ndarray
    extra: np.ndarray  # int32 index of a JSON object string, -1 = no extra properties
    target_type: np.ndarray  # uint8: 0 gauge, 1 counter
    value: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.value.shape[0])

    def same_as(self, other: PointColumns) -> bool:
        """Same strings in the same order and the same column values: equal encodings."""
        return self.strings == other.strings and all(
            np.array_equal(getattr(self, name), getattr(other, name))
            for name in (*_INDEX_COLUMNS, "target_type", "value")
        )

    @classmethod
    def from_points(cls, points: Sequence[Point]) -> PointColumns:
        index: dict[str, int] = {}

        def ref(text: str | None) -> int:
            if text is None:
                return -1
            return index.setdefault(text, len(index))

        columns: dict[str, list[int]] = {name: [] for name in _INDEX_COLUMNS}
        target_types = []
        for point in points:
            columns["what"].append(ref(point.what))
            columns["class_name"].append(ref(point.class_name))
            columns["feat_name"].append(ref(point.feat_name))
            columns["stat"].append(ref(point.stat))
            columns["extra"].append(ref(extra_json(point.extra)) if point.extra else -1)
            if point.target_type not in TARGET_TYPES:
                raise ValueError(
                    f"target_type: expected 'gauge' or 'counter', got {point.target_type!r}"
                )
            target_types.append(TARGET_TYPES.index(point.target_type))
        arrays = {name: np.asarray(values, dtype=_INDEX) for name, values in columns.items()}
        return cls(
            strings=list(index),
            target_type=np.asarray(target_types, dtype=np.uint8),
            value=np.asarray([p.value for p in points], dtype=_VALUE),
            **arrays,
        )

    def to_avro(self) -> dict[str, Any]:
        packed = {name: getattr(self, name).astype(_INDEX).tobytes() for name in _INDEX_COLUMNS}
        return {
            "count": len(self),
            "strings": self.strings,
            "target_type": self.target_type.astype(np.uint8).tobytes(),
            "value": self.value.astype(_VALUE).tobytes(),
            **packed,
        }

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> PointColumns:
        count = record["count"]
        strings = record["strings"]
        if count < 0:
            raise SchemaDecodeError(f"points.count: must be >= 0, got {count}")
        arrays: dict[str, np.ndarray] = {}
        for name, dtype in (*((n, _INDEX) for n in _INDEX_COLUMNS), ("value", _VALUE)):
            data = record[name]
            if len(data) != count * dtype.itemsize:
                raise SchemaDecodeError(
                    f"points.{name}: {len(data)} bytes, expected {count * dtype.itemsize} "
                    f"({count} values of {dtype.itemsize} bytes)"
                )
            arrays[name] = np.frombuffer(data, dtype=dtype)
        for name in _INDEX_COLUMNS:
            column = arrays[name]
            lowest = 0 if name == "what" else -1
            if count and (column.min() < lowest or column.max() >= len(strings)):
                raise SchemaDecodeError(
                    f"points.{name}: indices must lie in [{lowest}, {len(strings) - 1}]"
                )
        target_type = np.frombuffer(record["target_type"], dtype=np.uint8)
        if target_type.shape[0] != count or (count and target_type.max() > 1):
            raise SchemaDecodeError(
                f"points.target_type: expected {count} bytes each 0 (gauge) or 1 (counter)"
            )
        return cls(strings=strings, target_type=target_type, **arrays)

    def to_points(self) -> list[Point]:
        strings = self.strings
        extras = {i: json.loads(strings[i]) for i in set(self.extra.tolist()) if i >= 0}

        def text(i: int) -> str | None:
            return None if i < 0 else strings[i]

        return [
            Point(
                what=strings[w],
                target_type=TARGET_TYPES[t],
                value=v,
                class_name=text(c),
                feat_name=text(f),
                stat=text(s),
                extra=extras[e] if e >= 0 else {},
            )
            for w, c, f, s, e, t, v in zip(
                self.what.tolist(),
                self.class_name.tolist(),
                self.feat_name.tolist(),
                self.stat.tolist(),
                self.extra.tolist(),
                self.target_type.tolist(),
                self.value.tolist(),
                strict=True,
            )
        ]


def concat(parts: Iterable[PointColumns]) -> PointColumns:
    """Several records' points as one set of columns (string dictionaries merged)."""
    parts = list(parts)
    strings: dict[str, int] = {}
    remapped: dict[str, list[np.ndarray]] = {name: [] for name in _INDEX_COLUMNS}
    for part in parts:
        mapping = np.array(
            [strings.setdefault(s, len(strings)) for s in part.strings] + [-1], dtype=_INDEX
        )
        for name in _INDEX_COLUMNS:
            remapped[name].append(mapping[getattr(part, name)])
    empty = np.empty(0, dtype=_INDEX)
    return PointColumns(
        strings=list(strings),
        target_type=np.concatenate([p.target_type for p in parts] or [np.empty(0, np.uint8)]),
        value=np.concatenate([p.value for p in parts] or [np.empty(0, _VALUE)]),
        **{name: np.concatenate(arrays or [empty]) for name, arrays in remapped.items()},
    )


def _target_type_code(target_type: str) -> int:
    if target_type not in TARGET_TYPES:
        raise ValueError(f"target_type: expected 'gauge' or 'counter', got {target_type!r}")
    return TARGET_TYPES.index(target_type)


def _extra_text(extra: Mapping[str, str] | None) -> str | None:
    """The string an extra-properties mapping is stored as (None when it is empty)."""
    return _extra_json_of(tuple(extra.items())) if extra else None


@functools.lru_cache(maxsize=4096)
def _extra_json_of(items: tuple[tuple[str, str], ...]) -> str:
    # the same few mappings (pred_class, average, bin) recur in every window of every agent
    return extra_json(dict(items))


class _EncodedBlock:
    """A :class:`PointBlock` as the builder stores it: the strings of each index column,
    the distinct strings in order of first use, the target-type codes."""

    def __init__(self, texts: list[tuple[str | None, ...]], types: np.ndarray) -> None:
        self.texts = texts
        self.types = types
        # point by point, field by field: the order one ``add`` per point numbers them in
        used = (text for point in zip(*texts, strict=True) for text in point)
        self.distinct = [text for text in dict.fromkeys(used) if text is not None]
        self._memo: tuple[list[int], dict[str, np.ndarray]] | None = None
        self._subsets: dict[tuple[int, ...], _EncodedBlock] = {}

    @classmethod
    def of(cls, block: PointBlock) -> _EncodedBlock:
        extras = tuple(_extra_text(extra) for extra in block.extra)
        texts = [block.what, block.class_name, block.feat_name, block.stat, extras]
        types = np.array([_target_type_code(t) for t in block.target_type], np.uint8)
        return cls(texts, types)

    def columns(self, refs: list[int]) -> dict[str, np.ndarray]:
        """The index and target-type columns when ``distinct[i]`` is numbered ``refs[i]``."""
        memo = self._memo
        if memo is not None and memo[0] == refs:
            return memo[1]
        lookup: dict[str | None, int] = dict(zip(self.distinct, refs, strict=True))
        lookup[None] = -1
        count = self.types.shape[0]
        columns = {
            name: np.fromiter(map(lookup.__getitem__, texts), _INDEX, count)
            for name, texts in zip(_INDEX_COLUMNS, self.texts, strict=True)
        }
        columns["target_type"] = self.types
        self._memo = (refs, columns)  # one assignment: a racing close sees old or new
        return columns

    def subset(self, keep: list[int]) -> _EncodedBlock:
        """The block of the points at these positions (the others' values not finite)."""
        key = tuple(keep)
        found = self._subsets.get(key)
        if found is None:
            texts = [tuple(column[i] for i in keep) for column in self.texts]
            found = _EncodedBlock(texts, self.types[keep])
            if len(self._subsets) < _MAX_SUBSETS:
                self._subsets[key] = found
        return found


_ENCODED: weakref.WeakKeyDictionary[PointBlock, _EncodedBlock] = weakref.WeakKeyDictionary()
_MAX_SUBSETS = 16  # e.g. the empty reliability bins of a window: few patterns recur


def _encoded(block: PointBlock) -> _EncodedBlock:
    found = _ENCODED.get(block)
    if found is None:
        found = _ENCODED[block] = _EncodedBlock.of(block)
    return found


def _finite_positions(values: np.ndarray) -> list[int] | None:
    """Positions of the finite values, or None when every value is finite."""
    finite = np.isfinite(values)
    if np.count_nonzero(finite) == finite.size:
        return None
    return np.flatnonzero(finite).tolist()


class PointColumnsBuilder:
    """Collects a window's points straight into columns, dropping every non-finite value.

    The window close of a wide model emits ~14 points per feature; as ``Point`` objects they
    cost about a third of the close. Here a per-feature series is one ``add_per_feature``
    call (a few array copies), and the result equals ``PointColumns.from_points`` of the
    same points added one by one: same order, same string dictionary, same bytes on the
    wire (strings are numbered in order of first use, field by field, as there).
    """

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._chunks: list[dict[str, np.ndarray] | dict[str, list[Any]]] = []
        self._pending: dict[str, list[Any]] = self._empty_pending()
        # id(names) -> (names, indices of all names): feature lists repeat for every stat
        self._names: dict[int, tuple[Sequence[str], np.ndarray]] = {}

    @staticmethod
    def _empty_pending() -> dict[str, list[Any]]:
        return {name: [] for name in (*_INDEX_COLUMNS, "target_type", "value")}

    def _ref(self, text: str | None) -> int:
        if text is None:
            return -1
        return self._index.setdefault(text, len(self._index))

    def add(
        self,
        what: str,
        target_type: str,
        value: float,
        class_name: str | None = None,
        feat_name: str | None = None,
        stat: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """One point, as ``Point(what, target_type, value, ...)``; skipped if not finite."""
        value = float(value)
        if not math.isfinite(value):
            return
        code = _target_type_code(target_type)
        pending = self._pending
        pending["what"].append(self._ref(what))
        pending["class_name"].append(self._ref(class_name))
        pending["feat_name"].append(self._ref(feat_name))
        pending["stat"].append(self._ref(stat))
        pending["extra"].append(self._ref(_extra_text(extra)))
        pending["target_type"].append(code)
        pending["value"].append(value)

    def add_rows(self, block: PointBlock, values: Sequence[float] | np.ndarray) -> None:
        """The block's points with these values (one per point), as one ``add`` per point
        would put them: same columns, same string numbering, non-finite values dropped.

        The block's strings are numbered once (not once per point), and its columns are
        reused while that numbering repeats, as it does in every window of an agent.
        """
        values = np.asarray(values, dtype=_VALUE).ravel()
        if values.size != len(block):
            raise ValueError(f"add_rows: {len(block)} points, got {values.size} values")
        encoded = _encoded(block)
        keep = _finite_positions(values)
        if keep is not None:
            if not keep:
                return
            encoded = encoded.subset(keep)
            values = values[keep]
        index = self._index
        refs = [index.setdefault(text, len(index)) for text in encoded.distinct]
        self._flush()
        chunk = dict(encoded.columns(refs))
        chunk["value"] = values.copy() if keep is None else values
        self._chunks.append(chunk)

    def add_per_feature(
        self, what: str, values: np.ndarray, names: Sequence[str], stat: str | None = None
    ) -> None:
        """One gauge per feature (``values[k]`` for ``names[k]``), non-finite values skipped.

        ``names`` must not change between calls (its indices are cached by identity).
        """
        values = np.asarray(values, dtype=_VALUE)
        positions = _finite_positions(values)
        keep = None if positions is None else np.asarray(positions, dtype=np.intp)
        count = values.shape[0] if keep is None else keep.shape[0]
        if count == 0:
            return
        what_ref = self._ref(what)
        first = 0 if keep is None else int(keep[0])
        self._ref(names[first])  # numbered before ``stat``, as point by point
        stat_ref = self._ref(stat)
        refs = self._name_refs(names, keep)
        kept_values = values if keep is None else values[keep]
        self._extend(count, what_ref, -1, refs, stat_ref, -1, 0, kept_values)

    def add_interleaved(
        self,
        whats: Sequence[str],
        columns: Sequence[np.ndarray],
        names: Sequence[str],
        target_type: str,
    ) -> None:
        """For each feature ``k`` in turn, one point per ``what``: ``columns[i][k]`` of
        ``whats[i]`` for ``names[k]`` (non-finite values skipped), e.g. the per-feature counts.
        """
        values = np.stack([np.asarray(c, dtype=_VALUE) for c in columns], axis=1).ravel()
        if values.size == 0:
            return
        if _finite_positions(values) is not None or target_type not in TARGET_TYPES:
            for k, name in enumerate(names):
                for i, what in enumerate(whats):
                    self.add(what, target_type, columns[i][k], feat_name=name)
            return
        first = self._ref(whats[0])
        self._ref(names[0])  # numbered before the second ``what``, as point by point
        what_refs = [first, *(self._ref(what) for what in whats[1:])]
        refs = self._name_refs(names, None)
        self._extend(
            values.size,
            np.tile(np.asarray(what_refs, _INDEX), len(names)),
            -1,
            np.repeat(refs, len(whats)),
            -1,
            -1,
            TARGET_TYPES.index(target_type),
            values,
        )

    def _extend(self, count: int, *fields: int | Sequence[int] | np.ndarray) -> None:
        """``count`` points, one value per point in the last field; each other field (the
        index columns, then the target type code) one int for all points or one per point.

        Runs shorter than ``_SMALL_BLOCK`` join the pending lists (converting a few dozen list
        items costs less than the NumPy calls of a chunk); longer ones become arrays at once.
        """
        *indices, values = fields
        if count < _SMALL_BLOCK:
            pending = self._pending
            for name, field in zip(_COLUMNS, indices, strict=True):
                if isinstance(field, int):
                    pending[name].extend([field] * count)
                else:
                    pending[name].extend(field.tolist() if isinstance(field, np.ndarray) else field)
            pending["value"].extend(np.asarray(values).tolist())
            return
        self._flush()
        chunk = {
            name: np.full(count, field, dtype)
            if isinstance(field, int)
            else np.asarray(field, dtype)
            for (name, dtype), field in zip(_COLUMN_TYPES.items(), indices, strict=True)
        }
        chunk["value"] = np.array(values, dtype=_VALUE)  # a copy: callers may reuse theirs
        self._chunks.append(chunk)

    def _name_refs(self, names: Sequence[str], keep: np.ndarray | None) -> np.ndarray:
        cached = self._names.get(id(names))
        if cached is not None and cached[0] is names:
            return cached[1] if keep is None else cached[1][keep]
        if keep is not None:  # number only the names in use, in order of use
            return np.array([self._ref(names[k]) for k in keep.tolist()], dtype=_INDEX)
        refs = np.array([self._ref(name) for name in names], dtype=_INDEX)
        self._names[id(names)] = (names, refs)
        return refs

    def _flush(self) -> None:
        # the pending lists join the chunks as they are: build converts them in one
        # concatenation per column, not a few NumPy calls per chunk
        if self._pending["value"]:
            self._chunks.append(self._pending)
            self._pending = self._empty_pending()

    def build(self) -> PointColumns:
        self._flush()
        chunks = self._chunks
        types = {**_COLUMN_TYPES, "value": _VALUE}
        arrays = {
            name: (
                np.concatenate([c[name] for c in chunks], dtype=dtype, casting="unsafe")
                if chunks
                else np.empty(0, dtype)
            )
            for name, dtype in types.items()
        }
        return PointColumns(strings=list(self._index), **arrays)
