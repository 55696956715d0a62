"""Order statistics by brackets (metrics.selection) against np.sort, both loops."""

from __future__ import annotations

import numpy as np
import pytest

from mlwatcher.metrics import ReferenceProfile, columns, kernels, selection, warm_up

COMPILED = [False, True] if selection.brackets_pay() else [False]


def _rows(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.random((9, n))
    if kind == "normal":
        return rng.normal(3.0, 2.0, (9, n))
    if kind == "float32":
        return rng.normal(size=(9, n)).astype(np.float32).astype(np.float64)
    if kind == "integers":  # ties inside and at the brackets' ends
        return rng.integers(0, 40, (9, n)).astype(np.float64)
    if kind == "binary":  # brackets holding most of the row: the partitions take it
        return rng.choice([0.0, 1.0], size=(9, n), p=[0.7, 0.3])
    if kind == "sorted":  # the row's order follows its values
        return np.sort(rng.normal(size=(9, n)), axis=1)
    if kind == "signed zeros":
        rows = rng.normal(size=(9, n))
        rows[:, : n // 2] = -0.0
        rows[:, n // 2 : 3 * n // 4] = 0.0
        return rows
    raise AssertionError(kind)


def _expected(rows: np.ndarray, ranks: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    ordered = np.sort(rows, axis=1)
    at = np.array(ranks)
    return ordered[:, at], ordered[:, at + 1]


@pytest.mark.parametrize("compiled", COMPILED)
@pytest.mark.parametrize(
    "kind", ["uniform", "normal", "float32", "integers", "binary", "sorted", "signed zeros"]
)
@pytest.mark.parametrize("n", [1001, 4003, 10_000, 20_005])
def test_brackets_give_the_order_statistics_of_a_sort(compiled: bool, kind: str, n: int) -> None:
    rng = np.random.default_rng(n)
    rows = _rows(kind, n, rng)
    sample = columns._sorted_sample(rows, columns.drift_sample_positions(n))
    ranks = selection.quartile_ranks(n)
    buffers = np.full((rows.shape[0], n + 8), np.nan)
    before = rows.copy()
    low, high = selection.by_brackets(rows, sample, ranks, buffers, compiled=compiled)
    want_low, want_high = _expected(rows, ranks)
    partitioned = selection.by_partition(rows.copy(), ranks)
    if kind == "signed zeros":  # -0.0 == 0.0: which of them a sort puts at a rank is its own
        assert np.array_equal(low, want_low) and np.array_equal(high, want_high)
        assert np.array_equal(low, partitioned[0]) and np.array_equal(high, partitioned[1])
    else:  # the same values, bit for bit: only the way to them differs
        assert low.tobytes() == want_low.tobytes() and high.tobytes() == want_high.tobytes()
        assert low.tobytes() == partitioned[0].tobytes()
    assert np.array_equal(rows, before)  # the rows are read, not reordered


@pytest.mark.parametrize("compiled", COMPILED)
def test_a_sample_from_elsewhere_misses_the_brackets_and_the_partitions_answer(
    compiled: bool,
) -> None:
    # A sample that does not come from the row: every bracket misses its quartile.
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(4, 5000))
    sample = np.sort(rng.normal(5.0, 1.0, (4, 1000)), axis=1)
    ranks = selection.quartile_ranks(5000)
    low, high = selection.by_brackets(rows, sample, ranks, np.empty((4, 5008)), compiled=compiled)
    want_low, want_high = _expected(rows, ranks)
    assert np.array_equal(low, want_low) and np.array_equal(high, want_high)


@pytest.mark.skipif(not selection.brackets_pay(), reason="the compiled read needs numba")
@pytest.mark.parametrize("n", [1001, 1007, 9999, 10_000])
def test_compiled_read_equals_its_numpy_twin(n: int) -> None:
    rng = np.random.default_rng(n)
    rows = rng.normal(size=(6, n))
    rows[1] = np.round(rows[1] * 3)
    rows[2, :] = 0.5  # one value: the sample says the buffer would be the whole row
    sample = columns._sorted_sample(rows, columns.drift_sample_positions(n))
    lower, upper = selection.bracket_ranks(n, sample.shape[1], selection.quartile_ranks(n))
    results = []
    for loop in (selection._bracket_pass_loop, selection._bracket_pass_compiled):
        bounds, below = np.zeros((6, 6)), np.zeros((6, 3), np.int64)
        sizes, buffers = np.zeros(6, np.int64), np.zeros((6, n + 8))
        widest = loop(rows, sample, lower, upper, n // 2, bounds, below, sizes, buffers)
        kept = [buffers[r, : max(s, 0)].copy() for r, s in enumerate(sizes)]
        padding = [buffers[r, max(s, 0) : widest] for r, s in enumerate(sizes)]
        assert all(np.isposinf(p).all() for p in padding)
        results.append((widest, bounds, below[sizes >= 0], sizes, kept))
    (w0, b0, c0, s0, k0), (w1, b1, c1, s1, k1) = results
    assert w0 == w1 and np.array_equal(b0, b1) and np.array_equal(c0, c1)
    assert np.array_equal(s0, s1) and s0[2] == -1
    assert all(np.array_equal(a, b) for a, b in zip(k0, k1, strict=True))
    for r in np.flatnonzero(s0 >= 0):  # the buffer: the row's values inside a bracket, in order
        inside = np.zeros(n, bool)
        for t in range(3):
            inside |= (rows[r] >= b0[r, 2 * t]) & (rows[r] <= b0[r, 2 * t + 1])
            assert c0[list(np.flatnonzero(s0 >= 0)).index(r), t] == (rows[r] < b0[r, 2 * t]).sum()
        assert np.array_equal(k0[r], rows[r][inside])


def test_bracket_ranks_reach_further_for_larger_samples_and_stay_in_range() -> None:
    for n, m in [(1001, 1000), (4000, 1000), (10_000, 1000), (100_000, 1000)]:
        ranks = selection.quartile_ranks(n)
        lower, upper = selection.bracket_ranks(n, m, ranks)
        assert (lower >= 0).all() and (upper <= m - 1).all() and (lower < upper).all()
        centres = np.array(ranks) * (m - 1) / (n - 1)
        assert (lower <= centres).all() and (centres + 1 <= upper).all()


def test_the_close_takes_the_brackets_only_with_the_compiled_loops() -> None:
    assert selection.brackets_pay() == (
        kernels.ENABLED and selection._bracket_pass_compiled is not None
    )


@pytest.mark.parametrize("compiled", COMPILED)
def test_rows_in_any_layout_are_read(compiled: bool) -> None:
    rng = np.random.default_rng(9)
    rows = np.asfortranarray(rng.normal(size=(5, 6000)))
    sample = columns._sorted_sample(rows, columns.drift_sample_positions(6000))
    ranks = selection.quartile_ranks(6000)
    low, high = selection.by_brackets(rows, sample, ranks, np.empty((5, 6008)), compiled=compiled)
    want_low, want_high = _expected(rows, ranks)
    assert np.array_equal(low, want_low) and np.array_equal(high, want_high)


@pytest.mark.skipif(not selection.brackets_pay(), reason="the compiled read needs numba")
def test_warm_up_compiles_every_variant_the_close_takes() -> None:
    # A worker warms the engine up before its first batch: its first long window must not
    # compile the bracket read on the close's path.
    warm_up()
    loops = (selection._bracket_pass_compiled, selection._read_ranks_compiled)
    compiled_before = [len(loop.signatures) for loop in loops]
    rng = np.random.default_rng(4)
    window = rng.random((3, 5000))
    profile = ReferenceProfile.from_data(rng.random((2000, 3)))
    columns.summarise(window, profile.numeric_rows([0, 1, 2]), threads=1)
    columns.summarise(window, threads=1)
    assert all(count >= 1 for count in compiled_before)
    assert [len(loop.signatures) for loop in loops] == compiled_before
