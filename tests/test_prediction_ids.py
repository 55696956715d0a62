"""hash_prediction_ids against a plain-Python reference of the spec, and its refusals."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwatcher.prediction_ids import _refuse_duplicates, hash_prediction_ids
from mlwatcher.validation import InvalidBatchError

MASK = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & MASK
    return h


def splitmix64_finaliser(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def reference(identifier: str | int) -> int:
    """The spec, one id at a time, the way a Java or Go producer would write it."""
    text = identifier if isinstance(identifier, str) else str(int(identifier))
    return splitmix64_finaliser(fnv1a64(text.encode("utf-8")))


def canonical(identifier: str | int) -> str:
    return identifier if isinstance(identifier, str) else str(int(identifier))


def test_reference_matches_the_published_algorithms() -> None:
    # FNV-1a 64 test vectors (Fowler/Noll/Vo) and splitmix64's first output from seed 0.
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8
    assert splitmix64_finaliser(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ("a", 0x02C0BDBF481420F8),
        ("foobar", 0x404DA9E3B74078C2),
        (42, 0xA428CE5471163B02),
        ("42", 0xA428CE5471163B02),
        ("héllo", 0x18E366C2AC71CBBE),
    ],
)
def test_known_vectors(identifier: str | int, expected: int) -> None:
    (value,) = hash_prediction_ids([identifier])
    assert int(value) == expected


unicode_ids = st.text(min_size=1, max_size=40)  # any code point but surrogates, incl. "\x00"
python_ints = st.integers(min_value=-(2**80), max_value=2**80)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(unicode_ids, min_size=1, max_size=60, unique=True))
def test_strings_match_the_reference(ids: list[str]) -> None:
    hashes = hash_prediction_ids(ids)
    assert hashes.dtype == np.uint64 and hashes.shape == (len(ids),)
    assert hashes.tolist() == [reference(i) for i in ids]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(unicode_ids, python_ints), min_size=1, max_size=60, unique_by=canonical))
def test_mixed_strings_and_python_ints_match_the_reference(ids: list[str | int]) -> None:
    assert hash_prediction_ids(ids).tolist() == [reference(i) for i in ids]
    assert hash_prediction_ids(tuple(ids)).tolist() == [reference(i) for i in ids]


@settings(max_examples=200, deadline=None)
@given(st.lists(int64s, min_size=1, max_size=80, unique=True))
def test_numpy_integers_match_the_reference(ids: list[int]) -> None:
    expected = [reference(i) for i in ids]
    assert hash_prediction_ids(np.array(ids, dtype=np.int64)).tolist() == expected
    assert hash_prediction_ids(pd.Series(ids, dtype="int64")).tolist() == expected
    assert hash_prediction_ids(ids).tolist() == expected
    assert hash_prediction_ids(np.array(ids, dtype=object)).tolist() == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=80, unique=True))
def test_uint64_arrays_match_the_reference(ids: list[int]) -> None:
    assert hash_prediction_ids(np.array(ids, dtype=np.uint64)).tolist() == [
        reference(i) for i in ids
    ]


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "uint8", "uint16", "uint32"])
def test_narrow_integer_dtypes(dtype: str) -> None:
    info = np.iinfo(dtype)
    values = np.unique(np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype))
    assert hash_prediction_ids(values).tolist() == [reference(int(v)) for v in values]


def test_integer_and_its_decimal_text_are_the_same_id() -> None:
    forms = [[42], ["42"], np.array([42]), np.array([42], dtype=np.uint64), [np.int16(42)]]
    assert len({int(hash_prediction_ids(form)[0]) for form in forms}) == 1
    assert hash_prediction_ids(range(5)).tolist() == [reference(i) for i in range(5)]


def test_other_containers() -> None:
    ids = ["x", "yz", "日本語"]
    expected = [reference(i) for i in ids]
    assert hash_prediction_ids(np.array(ids)).tolist() == expected
    assert hash_prediction_ids(pd.Series(ids)).tolist() == expected
    assert hash_prediction_ids(pd.Series(ids, dtype="string")).tolist() == expected
    assert hash_prediction_ids(pd.Index(ids)).tolist() == expected
    assert hash_prediction_ids([]).shape == (0,)


def test_a_trailing_nul_byte_is_part_of_the_id() -> None:
    hashes = hash_prediction_ids(["a\x00", "a"])
    assert hashes.tolist() == [reference("a\x00"), reference("a")]


@pytest.mark.parametrize(
    ("ids", "fragment"),
    [
        ("abc", "expected a sequence of ids"),
        (7, "expected a sequence of ids"),
        (None, "expected a sequence of ids"),
        ({"a", "b"}, "ordered sequence"),
        (["a", 1.5], "position 1: expected a str or an integer, got float 1.5"),
        (["a", "b", None], "position 2: expected a str or an integer, got NoneType"),
        ([True], "position 0: expected a str or an integer, got bool"),
        ([1, np.True_], "position 1: expected a str or an integer, got bool"),
        ([b"raw"], "position 0: expected a str or an integer, got bytes"),
        (["a", ["b"]], "position 1: expected a str or an integer, got list"),
        (["a", ""], "position 1: an id may not be the empty string"),
        (["ok", "\ud800"], "position 1: '\\ud800' is not valid Unicode text"),
        (np.array([1.0, 2.0]), "got an array of dtype float64"),
        (np.array([True]), "got an array of dtype bool"),
        (np.array([b"a"]), "got an array of dtype |S1"),
        (np.array([[1, 2]]), "1-D"),
        (pd.Series(["a", None]), "position 1: expected a str or an integer"),
        (pd.Series([1, pd.NA], dtype="Int64"), "position 1: expected a str or an integer"),
        (["a", "b", "a"], "duplicate id 'a' at positions 0 and 2"),
        ([7, "x", "7"], "duplicate id '7' at positions 0 and 2"),
        (np.array([5, 3, 3, 5]), "duplicate id '3' at positions 1 and 2"),
    ],
)
def test_bad_ids_are_refused(ids: object, fragment: str) -> None:
    with pytest.raises(InvalidBatchError) as caught:
        hash_prediction_ids(ids)
    assert caught.value.argument == "prediction_ids"
    assert str(caught.value).startswith("prediction_ids: ")
    assert fragment in str(caught.value)


@settings(max_examples=100, deadline=None)
@given(st.lists(unicode_ids, min_size=2, max_size=30), st.data())
def test_duplicates_name_the_first_repeat_and_its_earlier_position(
    ids: list[str], data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(ids) - 1))
    ids = [*ids, ids[position]]  # at least one repeat
    first_seen: dict[str, int] = {}
    expected = None
    for index, identifier in enumerate(ids):
        if identifier in first_seen:
            expected = (first_seen[identifier], index)
            break
        first_seen[identifier] = index
    with pytest.raises(InvalidBatchError) as caught:
        hash_prediction_ids(ids)
    assert f"at positions {expected[0]} and {expected[1]}" in str(caught.value)


def test_a_hash_collision_is_refused_like_a_duplicate_and_says_so() -> None:
    # Distinct ids with equal 64-bit hashes are too rare to find; give the check equal hashes.
    with pytest.raises(InvalidBatchError) as caught:
        _refuse_duplicates(np.array([9, 4, 9], dtype=np.uint64), ["p", "q", "r"], "prediction_ids")
    message = str(caught.value)
    assert message.startswith("prediction_ids: ids 'p' (position 0) and 'r' (position 2)")
    assert "hash collision" in message and "0x0000000000000009" in message


def test_the_documented_vectors_are_the_implementation() -> None:
    text = (Path(__file__).parents[1] / "docs" / "schemas.md").read_text()
    rows = re.findall(
        r"^\| `([^`]+)`(?: or `[^`]+`)? \| `[0-9a-f ]+` \| `(0x\w+)` \| `(0x\w+)` \|$", text, re.M
    )
    assert len(rows) == 4
    for shown, fnv, final in rows:
        identifier = int(shown) if shown.isdigit() else shown.strip('"')
        assert fnv1a64(canonical(identifier).encode()) == int(fnv, 16)
        assert int(hash_prediction_ids([identifier])[0]) == int(final, 16)


def test_one_long_id_among_many() -> None:
    # 4000 ids x a 5000-byte id would be a 20 MB byte matrix: hashed column by column instead.
    ids = ["x" * 5000, *map(str, range(3999))]
    assert hash_prediction_ids(ids).tolist() == [reference(i) for i in ids]


@pytest.mark.parametrize("width", [1, 8, 18])
def test_ids_of_one_length(width: int) -> None:
    first = 10 ** (width - 1) if width > 1 else 0
    ints = np.arange(first, first + min(500, 10**width - first))
    texts = [f"u{i}" for i in ints]  # all width + 1 characters
    assert hash_prediction_ids(ints).tolist() == [reference(int(i)) for i in ints]
    assert hash_prediction_ids(texts).tolist() == [reference(t) for t in texts]


def other_language_ids() -> list[str]:
    """Random ids over all of Unicode but surrogates and line breaks (one id per line)."""
    rng = np.random.default_rng(13)
    planes = [(0x00, 0x09), (0x0B, 0x0C), (0x0E, 0x7F), (0xA0, 0xD7FF), (0xE000, 0xFFFF)]
    planes.append((0x10000, 0x10FFFF))
    ids = ["a", "foobar", "42", "-7", "héllo", "x\x00y"]
    for length in rng.integers(1, 24, size=300):
        low, high = planes[rng.integers(len(planes))]
        ids.append("".join(chr(c) for c in rng.integers(low, high + 1, size=length)))
    return list(dict.fromkeys(ids))


def documented_code(language: str) -> str:
    text = (Path(__file__).parents[1] / "docs" / "schemas.md").read_text()
    (code,) = re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)
    return code


@pytest.mark.parametrize(
    ("language", "file_name", "command"),
    [
        ("java", "PredictionIdHash.java", ["java", "PredictionIdHash.java"]),
        ("go", "prediction_id_hash.go", ["go", "run", "prediction_id_hash.go"]),
    ],
)
def test_the_documented_java_and_go_code_gives_the_same_hashes(
    tmp_path: Path, language: str, file_name: str, command: list[str]
) -> None:
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed: the {language} snippet is not checked")
    (tmp_path / file_name).write_text(documented_code(language))
    ids = other_language_ids()
    result = subprocess.run(
        command,
        cwd=tmp_path,
        input="\n".join(ids).encode() + b"\n",
        capture_output=True,
        check=True,
        timeout=240,
    )
    assert [int(line) for line in result.stdout.split()] == hash_prediction_ids(ids).tolist()
