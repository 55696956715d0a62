"""Prediction ids and their 64-bit hashes: how a label sent later finds its prediction row.

``collect_data(..., prediction_ids=ids)`` sends, for each row, the hash of its id, and
``collect_labels(ids, labels)`` sends the hashes of the ids it labels; the stream worker joins
the two on equal hashes. So this hash **is the contract** between every producer (Python here,
or a Java/Go one) and the worker:

1. **Id → bytes.** An id is a string or an integer. A string is its UTF-8 bytes (it must not
   be empty, and must be encodable: lone surrogates are refused). An integer (Python ``int`` or
   a numpy integer, of any size or sign) is its decimal text, ASCII, ``-`` before a negative
   value and no leading zeros or ``+``: ``42`` → ``b"42"``, ``-7`` → ``b"-7"``. **So the
   integer 42 and the string "42" are the same id.** Anything else (float, bool, None, bytes,
   a nested sequence, ...) is refused: ``1.0`` and ``True`` would make ``"1.0"``/``"True"`` or
   ``1`` ambiguous.
2. **FNV-1a 64** over those bytes: ``h = 0xcbf29ce484222325``; for each byte ``b``:
   ``h = (h XOR b) * 0x100000001b3 mod 2**64``.
3. **splitmix64 finaliser** (spreads FNV's weak low bits over all 64):
   ``h ^= h >> 30; h *= 0xbf58476d1ce4e5b9; h ^= h >> 27; h *= 0x94d049bb133111eb;
   h ^= h >> 31`` (all mod 2**64, logical shifts).

On the wire the hash is a uint64, little-endian (``PredictionBatch.prediction_ids``,
``LabelBatch.prediction_ids``). Test vectors (FNV-1a 64 alone, then the final hash)::

    "a"            fnv 0xaf63dc4c8601ec8c   hash 0x02c0bdbf481420f8
    "foobar"       fnv 0x85944171f73967e8   hash 0x404da9e3b74078c2
    42 or "42"     fnv 0x07ee7e07b4b19223   hash 0xa428ce5471163b02
    "héllo"        fnv 0xa35ff71f960240e0   hash 0x18e366c2ac71cbbe   (UTF-8: 68 c3 a9 6c 6c 6f)

Ids must be unique within one call; a duplicate raises ``InvalidBatchError`` naming the id and
its two positions. Uniqueness is checked on the hashes, so two *distinct* ids with the same
64-bit hash (odds about ``n**2 / 2**65`` for ``n`` ids) are refused the same way, and the
message says it is a collision.

The hashing is vectorised: FNV-1a runs one numpy step per byte *column* (byte k of every id
at once), never one Python step per id. Strings are encoded with ``str.encode`` and joined into
one buffer; numpy integer arrays (and ``range``) never become text: their decimal digits are
computed by numpy, column by column. ``python -m benchmarks.bench_prediction_ids`` measures it
against the spec written as a per-id Python loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from mlwatcher.validation import InvalidBatchError

ARGUMENT = "prediction_ids"

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)

_GATHER_LIMIT = 1 << 24  # bytes of the (longest id x ids) matrix gathered at once
_POWERS_OF_TEN = np.array([10**p for p in range(20)], dtype=np.uint64)  # 10**19 < 2**64


def hash_prediction_ids(ids: Any, *, argument: str = ARGUMENT) -> np.ndarray:
    """The uint64 hashes, shape ``(n,)``, of ``n`` unique ids (list, tuple, range, numpy array
    or pandas Series/Index of str and integers); ``InvalidBatchError(argument, ...)`` names the
    position and the problem of a bad one."""
    items = _as_items(ids, argument)
    if isinstance(items, np.ndarray) and items.dtype.kind in "iu":
        hashes = _finalise(_fnv1a_decimal(items))
    else:
        hashes = _finalise(_fnv1a_text(items, argument))
    _refuse_duplicates(hashes, items, argument)
    return hashes


# -- ids → bytes ------------------------------------------------------------------------------


def _as_items(ids: Any, argument: str) -> np.ndarray | list[Any] | tuple[Any, ...]:
    """The ids as an indexable 1-D container: an integer, str or object array, a list or a
    tuple."""
    if isinstance(ids, str | bytes | bytearray | memoryview) or not hasattr(ids, "__len__"):
        raise InvalidBatchError(
            argument,
            f"expected a sequence of ids (list, tuple, numpy array or pandas Series), "
            f"got {type(ids).__name__}",
        )
    if isinstance(ids, dict | set | frozenset):
        raise InvalidBatchError(
            argument, f"expected an ordered sequence of ids, got {type(ids).__name__}"
        )
    if isinstance(ids, range):
        return np.arange(ids.start, ids.stop, ids.step, dtype=np.int64)
    if hasattr(ids, "to_numpy") and not isinstance(ids, np.ndarray):  # pandas Series / Index
        ids = _pandas_values(ids, argument)
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise InvalidBatchError(
                argument, f"expected a 1-D sequence of ids, got a {ids.ndim}-D array {ids.shape}"
            )
        if ids.dtype.kind not in "iuUO":
            raise InvalidBatchError(
                argument,
                f"position 0: expected str or integer ids, got an array of dtype {ids.dtype}",
            )
        return ids.tolist() if ids.dtype.kind == "U" else ids
    return ids if isinstance(ids, list | tuple) else list(ids)


def _pandas_values(ids: Any, argument: str) -> np.ndarray:
    """A Series' or Index's values; a missing value is named by position, not by the float
    dtype pandas would turn a nullable integer column into."""
    missing = np.asarray(ids.isna(), dtype=bool) if hasattr(ids, "isna") else None
    if missing is not None and missing.any():
        position = int(np.argmax(missing))
        raise InvalidBatchError(
            argument, f"position {position}: expected a str or an integer, got a missing value"
        )
    return ids.to_numpy()


def _fnv1a_text(ids: Any, argument: str) -> np.ndarray:
    """FNV-1a 64 of each id's text: strings as UTF-8, integers as decimal."""
    joined = _joined_strings(ids)
    flat, starts, lengths = joined if joined is not None else _text_bytes(ids, argument)
    if lengths.size and not lengths.all():
        raise InvalidBatchError(
            argument, f"position {int(np.argmin(lengths))}: an id may not be the empty string"
        )
    order, active = _longest_first(lengths)
    starts = starts[order]
    # Byte k of every id, k = 0, 1, ...; the bytes past an id's end (the next ids', clipped at
    # the buffer's end) are never hashed. In one gather, unless one long id would make that
    # (width, n) matrix big.
    last = flat.size - 1
    if active.size * order.size <= _GATHER_LIMIT:
        positions = starts + np.arange(active.size)[:, None]
        columns: Iterable[np.ndarray] = flat[np.minimum(positions, last, out=positions)]
    else:
        columns = (flat[np.minimum(starts + k, last)] for k in range(active.size))
    return _fnv1a_columns(order, active, columns)


def _joined_strings(ids: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The fast path for ids that are all strings: one join and one encode for the whole call
    instead of one encode per id. UTF-8 has no 0 byte but for "\\x00" itself, so "\\x00"
    separators show where each id ends. None if an id is not a str, holds a "\\x00" or a lone
    surrogate."""
    try:
        flat = np.frombuffer("\x00".join(ids).encode(), dtype=np.uint8)
    except (TypeError, UnicodeEncodeError):
        return None
    separators = np.flatnonzero(flat == 0)
    if separators.size != len(ids) - 1:
        return None
    starts = np.concatenate(([0], separators + 1))
    ends = np.concatenate((separators, [flat.size]))
    return flat, starts, ends - starts


def _text_bytes(ids: Any, argument: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every id's bytes, each followed by one separator byte, where each starts and its
    length; refuses what is not an id."""
    kinds = set(map(type, ids))
    for kind in kinds:
        if not _is_id_type(kind):
            position = next(i for i, value in enumerate(ids) if type(value) is kind)
            raise InvalidBatchError(argument, _bad_id(position, ids[position]))
    texts = [value if isinstance(value, str) else str(int(value)) for value in ids]
    try:
        encoded = list(map(str.encode, texts))
    except UnicodeEncodeError:
        position = next(i for i, text in enumerate(texts) if not _encodable(text))
        raise InvalidBatchError(
            argument, f"position {position}: {texts[position]!r} is not valid Unicode text"
        ) from None
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    starts = np.cumsum(lengths + 1) - lengths - 1
    return np.frombuffer(b"\x00".join(encoded) + b"\x00", dtype=np.uint8), starts, lengths


def _is_id_type(kind: type) -> bool:
    if issubclass(kind, bool | np.bool_):
        return False
    return issubclass(kind, str | int | np.integer)


def _bad_id(position: int, value: Any) -> str:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"position {position}: expected a str or an integer, got {type(value).__name__} {shown}"


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _fnv1a_decimal(values: np.ndarray) -> np.ndarray:
    """FNV-1a 64 of the decimal text of integers, computed with numpy alone: column by column
    from the most significant digit, ``-`` before the first digit of a negative value."""
    if values.dtype == np.uint64:
        negative = np.zeros(values.shape, dtype=bool)
        magnitude = values
    else:
        signed = values.astype(np.int64)
        negative = signed < 0
        bits = signed.view(np.uint64)
        magnitude = np.where(negative, ~bits + np.uint64(1), bits)  # |x|, also for -2**63
    n_digits = np.maximum(1, np.searchsorted(_POWERS_OF_TEN, magnitude, side="right"))
    lengths = n_digits + negative
    order, active = _longest_first(lengths)
    width = active.size
    # Right-aligned text, as a (width, n) matrix: row k holds the digit of 10**(width - 1 - k)
    # of every id, from one division by the scalar 10 per row. An id starts where it becomes
    # active (see _fnv1a_columns); that digit is a leading 0, or its "-".
    columns = np.empty((width, order.size), dtype=np.uint64)
    quotient, ten = magnitude[order], np.uint64(10)
    for k in range(width - 1, -1, -1):
        next_quotient = quotient // ten
        np.subtract(quotient, next_quotient * ten, out=columns[k])
        quotient = next_quotient
    columns += np.uint64(ord("0"))
    rows = np.flatnonzero(negative[order])
    columns[width - lengths[order][rows], rows] = ord("-")
    return _fnv1a_columns(order, active, columns, right_aligned=True)


# -- hashing ----------------------------------------------------------------------------------


def _longest_first(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row order by length, longest first, and for each byte column k how many of those
    rows are longer than k: the rows that hash column k are a prefix of that order."""
    if lengths.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    shortest, width = int(lengths.min()), int(lengths.max())
    if shortest == width:  # ids of one length (UUIDs, fixed formats): nothing to order
        return np.arange(lengths.size), np.full(width, lengths.size)
    # numpy sorts 16-bit integers with a radix sort: about 3x faster than int64 here
    key = -lengths.astype(np.int16 if width < 2**15 else np.int64)
    order = np.argsort(key, kind="stable")
    active = np.searchsorted(key[order], -np.arange(width), side="left")
    return order, active


def _fnv1a_columns(
    order: np.ndarray,
    active: np.ndarray,
    columns: Iterable[np.ndarray],
    right_aligned: bool = False,
) -> np.ndarray:
    """FNV-1a 64 by byte column: ``columns[k]`` is byte k of every id, longest id first, and
    ``active[k]`` how many ids are longer than k. One numpy step per column, over every id at
    once, each on a slice (the ids still hashing), no mask. Right-aligned texts (all ending
    in the last column) start hashing late instead of stopping early: the counts run
    backwards."""
    hashes = np.full(order.size, FNV_OFFSET, dtype=np.uint64)
    counts = active[::-1] if right_aligned else active
    for column, count in zip(columns, counts.tolist(), strict=True):
        running = hashes[:count]
        np.bitwise_xor(running, column[:count], out=running)
        np.multiply(running, FNV_PRIME, out=running)
    result = np.empty_like(hashes)
    result[order] = hashes
    return result


def _finalise(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function (Steele, Lea, Flood 2014; constants of Stafford's Mix13)."""
    x = x ^ (x >> np.uint64(30))
    x *= _MIX_1
    x ^= x >> np.uint64(27)
    x *= _MIX_2
    x ^= x >> np.uint64(31)
    return x


# -- uniqueness -------------------------------------------------------------------------------


def _refuse_duplicates(hashes: np.ndarray, ids: Any, argument: str) -> None:
    """Names the repeat with the smallest position and the first position of its hash."""
    if hashes.size < 2:
        return
    ordered = np.sort(hashes)
    if not (ordered[1:] == ordered[:-1]).any():
        return
    order = np.argsort(hashes, kind="stable")  # equal hashes keep their positions ascending
    ordered = hashes[order]
    repeat = np.empty(ordered.size, dtype=bool)
    repeat[0] = False
    np.equal(ordered[1:], ordered[:-1], out=repeat[1:])
    group_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(ordered.size)))
    candidates = np.flatnonzero(repeat)
    chosen = candidates[np.argmin(order[candidates])]
    first, second = int(order[group_start[chosen]]), int(order[chosen])
    first_text, second_text = _id_text(ids, first), _id_text(ids, second)
    if first_text == second_text:
        problem = f"duplicate id {first_text!r} at positions {first} and {second}"
    else:
        problem = (
            f"ids {first_text!r} (position {first}) and {second_text!r} (position {second}) "
            f"have the same 64-bit hash {int(hashes[first]):#018x}: a hash collision, refused "
            f"like a duplicate id (rename one of them)"
        )
    raise InvalidBatchError(argument, problem + "; ids must be unique within one call")


def _id_text(items: Any, position: int) -> str:
    value = items[position]
    return value if isinstance(value, str) else str(int(value))
