"""Metric points stored column by column, with one string dictionary per record.

A window can hold thousands of points whose property strings repeat (``what``, ``stat``,
feature names). Columns of int32 indices into one list of distinct strings, plus packed
float64 values, decode with ``np.frombuffer`` instead of one Avro record per point.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlwatcher.point import Point
from mlwatcher.schemas.codec import SchemaDecodeError

TARGET_TYPES = ("gauge", "counter")
_INDEX_COLUMNS = ("what", "class_name", "feat_name", "stat", "extra")
_INDEX = np.dtype("<i4")
_VALUE = np.dtype("<f8")


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


def _per_point(given: Any, count: int, single: type) -> Sequence[Any]:
    """``given`` as one entry per point: a sequence as it is, one value (or None) repeated."""
    if given is None or isinstance(given, single):
        return [given] * count
    if len(given) != count:
        raise ValueError(f"expected one entry per point ({count}), got {len(given)}")
    return given  # type: ignore[no-any-return]


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
        self._extras: dict[tuple[tuple[str, str], ...], int] = {}
        self._chunks: list[dict[str, np.ndarray]] = []
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

    def _extra_ref(self, extra: Mapping[str, str]) -> int:
        if not extra:
            return -1
        key = tuple(extra.items())
        found = self._extras.get(key)
        if found is None:
            found = self._extras[key] = self._ref(extra_json(extra))
        return found

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
        pending["extra"].append(self._extra_ref(extra or {}))
        pending["target_type"].append(code)
        pending["value"].append(value)

    def add_rows(
        self,
        what: str | Sequence[str],
        target_type: str | Sequence[str],
        values: Sequence[float] | np.ndarray,
        class_name: str | Sequence[str | None] | None = None,
        feat_name: str | Sequence[str | None] | None = None,
        stat: str | Sequence[str | None] | None = None,
        extra: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> None:
        """``add(what[i], target_type[i], values[i], class_name[i], ...)`` for each ``i`` in
        turn; an argument given once (a string, a mapping or None) holds for every point.

        The same columns and string numbering as the ``add`` calls, without their per-point
        overhead: a constant field's string is numbered at the first point kept, and only the
        varying fields are looked up per point.
        """
        values = np.asarray(values, dtype=_VALUE).ravel()
        count = values.size
        fields = [what, class_name, feat_name, stat]
        if isinstance(target_type, str):
            types = np.full(count, _target_type_code(target_type), np.uint8)
        else:
            types = np.array([_target_type_code(t) for t in target_type], np.uint8)
        keep = np.flatnonzero(np.isfinite(values)).tolist()
        if not keep:
            return
        extras = _per_point(extra, count, Mapping)
        columns = [_per_point(field, count, str) for field in fields]
        first = keep[0]
        refs = [self._ref(column[first]) for column in columns]
        refs.append(self._extra_ref(extras[first] or {}))
        varying = [c for c, f in enumerate(fields) if not (f is None or isinstance(f, str))]
        out = {k: [refs[k]] for k in range(5)}
        extra_refs: dict[int, int] = {}
        extra_varies = not (extra is None or isinstance(extra, Mapping))
        for i in keep[1:]:
            for k in varying:
                out[k].append(self._ref(columns[k][i]))
            if extra_varies:
                mapping = extras[i]
                found = extra_refs.get(id(mapping))
                if found is None:
                    found = extra_refs[id(mapping)] = self._extra_ref(mapping or {})
                out[4].append(found)
        kept = len(keep)
        self._flush()
        chunk = {
            name: np.asarray(out[k], _INDEX) if len(out[k]) == kept else np.full(kept, refs[k])
            for k, name in enumerate(("what", "class_name", "feat_name", "stat", "extra"))
        }
        chunk["target_type"] = types[keep]
        chunk["value"] = values[keep]
        self._chunks.append(
            {name: chunk[name] for name in (*_INDEX_COLUMNS, "target_type", "value")}
        )

    def add_per_feature(
        self, what: str, values: np.ndarray, names: Sequence[str], stat: str | None = None
    ) -> None:
        """One gauge per feature (``values[k]`` for ``names[k]``), non-finite values skipped.

        ``names`` must not change between calls (its indices are cached by identity).
        """
        values = np.asarray(values, dtype=_VALUE)
        finite = np.isfinite(values)
        everything = bool(finite.all())
        keep = None if everything else np.flatnonzero(finite)
        count = values.shape[0] if keep is None else keep.shape[0]
        if count == 0:
            return
        what_ref = self._ref(what)
        first = 0 if keep is None else int(keep[0])
        self._ref(names[first])  # numbered before ``stat``, as point by point
        stat_ref = self._ref(stat)
        refs = self._name_refs(names, keep)
        self._flush()
        self._chunks.append(
            {
                "what": np.full(count, what_ref, _INDEX),
                "class_name": np.full(count, -1, _INDEX),
                "feat_name": refs,
                "stat": np.full(count, stat_ref, _INDEX),
                "extra": np.full(count, -1, _INDEX),
                "target_type": np.zeros(count, np.uint8),
                "value": values.copy() if keep is None else values[keep],
            }
        )

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
        if not np.isfinite(values).all() or target_type not in TARGET_TYPES:
            for k, name in enumerate(names):
                for i, what in enumerate(whats):
                    self.add(what, target_type, columns[i][k], feat_name=name)
            return
        first = self._ref(whats[0])
        self._ref(names[0])  # numbered before the second ``what``, as point by point
        what_refs = [first, *(self._ref(what) for what in whats[1:])]
        refs = self._name_refs(names, None)
        self._flush()
        count, width = values.size, len(whats)
        self._chunks.append(
            {
                "what": np.tile(np.asarray(what_refs, _INDEX), len(names)),
                "class_name": np.full(count, -1, _INDEX),
                "feat_name": np.repeat(refs, width),
                "stat": np.full(count, -1, _INDEX),
                "extra": np.full(count, -1, _INDEX),
                "target_type": np.full(count, TARGET_TYPES.index(target_type), np.uint8),
                "value": values,
            }
        )

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
        pending = self._pending
        if not pending["value"]:
            return
        chunk = {name: np.asarray(pending[name], dtype=_INDEX) for name in _INDEX_COLUMNS}
        chunk["target_type"] = np.asarray(pending["target_type"], dtype=np.uint8)
        chunk["value"] = np.asarray(pending["value"], dtype=_VALUE)
        self._chunks.append(chunk)
        self._pending = self._empty_pending()

    def build(self) -> PointColumns:
        self._flush()
        chunks = self._chunks
        empty = {name: np.empty(0, _INDEX) for name in _INDEX_COLUMNS}
        empty.update(target_type=np.empty(0, np.uint8), value=np.empty(0, _VALUE))
        arrays = {
            name: np.concatenate([c[name] for c in chunks]) if chunks else column
            for name, column in empty.items()
        }
        return PointColumns(strings=list(self._index), **arrays)
