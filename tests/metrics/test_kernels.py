"""The close's compiled loops and their NumPy twins, each against SciPy / NumPy.

Both implementations run in every test: the numba loop (the worker extra installs numba, so
it must be there unless ``MLWATCHER_NUMBA=0`` asks for the twins) and the NumPy twin (what
runs without numba).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as sps

from mlwatcher.metrics import kernels

IMPLEMENTATIONS = [pytest.param(True, id="compiled"), pytest.param(False, id="numpy")]


def test_numba_is_used_by_default() -> None:
    # The figures in the README are of the compiled loops: a worker install must get them.
    wanted = os.environ.get("MLWATCHER_NUMBA", "1") != "0"
    assert kernels.ENABLED is wanted


def _samples(kind: str, rows: int, n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    draw = {
        "normal": lambda shape: rng.normal(size=shape),
        "shifted": lambda shape: rng.normal(0.3, 1.2, size=shape),
        "integers": lambda shape: rng.integers(0, 20, size=shape).astype(float),
        "float32": lambda shape: rng.random(shape).astype(np.float32).astype(float),
        "constant": lambda shape: np.full(shape, 2.5),
    }[kind]
    return np.sort(draw((rows, n)), axis=1), np.sort(draw((rows, m)), axis=1)


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
@pytest.mark.parametrize("kind", ["normal", "shifted", "integers", "float32", "constant"])
@pytest.mark.parametrize(
    ("rows", "n", "m"), [(30, 1000, 2000), (31, 40, 70), (7, 257, 1000), (5, 20, 30), (1, 1, 1)]
)
def test_ks_wasserstein_bins_equal_scipy(
    compiled: bool, kind: str, rows: int, n: int, m: int
) -> None:
    # Ties within and between samples, odd row counts (the loop merges rows in pairs), and
    # bins padded with +inf.
    current, reference = _samples(kind, rows, n, m, seed=n + m + rows)
    rng = np.random.default_rng(rows)
    edges = np.sort(rng.choice(reference.ravel(), size=(rows, 9)), axis=1)
    edges[:, 7:] = np.inf
    ks, distance, cumulative = kernels.ks_wasserstein_bins(
        current, reference, edges, compiled=compiled
    )
    for r in range(rows):
        assert ks[r] == pytest.approx(sps.ks_2samp(current[r], reference[r]).statistic, abs=1e-15)
        expected = sps.wasserstein_distance(current[r], reference[r])
        assert distance[r] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        np.testing.assert_array_equal(
            cumulative[r], np.searchsorted(current[r], edges[r], side="right")
        )


def test_ks_statistic_is_the_same_bits_in_both_implementations() -> None:
    # A record must not depend on whether numba is installed: KS and bin counts are exact
    # integer arithmetic then one division in both; the sums may differ in the last ulps.
    current, reference = _samples("normal", 64, 1000, 2000, seed=3)
    edges = np.quantile(reference, np.linspace(0.1, 0.9, 9), axis=1).T.copy()
    fast = kernels.ks_wasserstein_bins(current, reference, edges, compiled=True)
    twin = kernels.ks_wasserstein_bins(current, reference, edges, compiled=False)
    np.testing.assert_array_equal(fast[0], twin[0])
    np.testing.assert_array_equal(fast[2], twin[2])
    np.testing.assert_allclose(fast[1], twin[1], rtol=1e-13)


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
@pytest.mark.parametrize("n", [1, 3, 4, 5, 1000, 10_001])
def test_row_moments(compiled: bool, n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.normal(5.0, 3.0, size=(6, n)) * 10.0 ** rng.integers(-3, 4, size=(6, 1))
    values[1] = rng.random(n).astype(np.float32)  # a float32-exact row
    means = values.mean(axis=1)
    wide = np.empty_like(values)
    moments, exact = kernels.row_moments(values, means, wide, compiled=compiled)
    np.testing.assert_array_equal(wide, values)
    assert exact
    np.testing.assert_allclose(moments.squares / n, values.var(axis=1), rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(moments.minima, values.min(axis=1))
    np.testing.assert_array_equal(moments.maxima, values.max(axis=1))

    narrow = np.empty(values.shape, np.float32)
    _, exact = kernels.row_moments(values, means, narrow, compiled=compiled)
    np.testing.assert_array_equal(narrow, values.astype(np.float32))
    assert not exact  # the other rows do not fit float32
    _, exact = kernels.row_moments(values[1:2], means[1:2], narrow[1:2], compiled=compiled)
    assert exact

    # without a copy (the bracket path): the same moments, bit for bit
    alone, exact = kernels.row_moments(values, means, None, compiled=compiled)
    assert exact
    for got, want in zip(alone, moments, strict=True):
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
def test_prediction_summaries(compiled: bool) -> None:
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(7) * 0.3, size=500)
    probs[0] = [0.4, 0.4, 0.2, 0, 0, 0, 0]  # a tie at the top: spread 0
    probs[1] = 1 / 7  # all equal
    probs[2] = [1, 0, 0, 0, 0, 0, 0]  # zeros: 0 log 0 = 0
    top, second, plogp = kernels.prediction_summaries(probs, compiled=compiled)
    ordered = np.sort(probs, axis=1)
    np.testing.assert_array_equal(top, ordered[:, -1])
    np.testing.assert_array_equal(second, ordered[:, -2])
    expected = -sps.entropy(probs, axis=1)  # -Σ p log p, natural log
    np.testing.assert_allclose(plogp, expected, rtol=1e-12, atol=1e-15)


def _labelled_rows(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) of rows whose confusion matrix is ``confusion`` (integer counts)."""
    pairs = [(t, p) for (t, p), count in np.ndenumerate(confusion) for _ in range(int(count))]
    true, predicted = np.array(pairs).T
    return true, predicted


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
@pytest.mark.parametrize("seed", range(6))
def test_confusion_scores_are_scikit_learns(compiled: bool, seed: int) -> None:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    confusion = rng.integers(0, 30, (n, n)).astype(float)
    confusion[:, n - 1] = 0  # a class never predicted: precision 0 (zero_division=0)
    confusion[0, :] = 0  # a class never true: recall 0
    confusion[0, 0] = 0
    per_class, averaged, overall = kernels.confusion_scores(confusion, compiled=compiled)
    true, predicted = _labelled_rows(confusion)
    classes = list(range(n))
    assert overall == pytest.approx(accuracy_score(true, predicted), rel=1e-15)
    scores = precision_recall_fscore_support(
        true, predicted, labels=classes, zero_division=0, average=None
    )
    np.testing.assert_allclose(per_class[:, 1:], np.column_stack(scores[:3]), rtol=1e-15)
    one_vs_rest = [accuracy_score(true == c, predicted == c) for c in classes]
    np.testing.assert_allclose(per_class[:, 0], one_vs_rest, rtol=1e-15)
    expected = [
        precision_recall_fscore_support(
            true, predicted, labels=classes, zero_division=0, average=average
        )[k]
        for k in range(3)
        for average in ("macro", "micro", "weighted")
    ]
    np.testing.assert_allclose(averaged, expected, rtol=1e-14)


@pytest.mark.parametrize("kind", ["counts", "expectations"])
def test_confusion_scores_compiled_and_twin_agree(kind: str) -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        n = int(rng.integers(2, 15))
        if kind == "counts":  # integer sums: the same bits in any order
            confusion = rng.integers(0, 1000, (n, n)).astype(float)
        else:  # an expected confusion matrix: sums of probabilities
            confusion = rng.dirichlet(np.ones(n), size=n) * rng.integers(1, 500, (n, 1))
        got = kernels.confusion_scores(confusion, compiled=True)
        twin = kernels.confusion_scores(confusion, compiled=False)
        if kind == "counts":
            np.testing.assert_array_equal(got[0], twin[0])
            assert got[2] == twin[2]
        np.testing.assert_allclose(got[0], twin[0], rtol=1e-13)
        np.testing.assert_allclose(got[1], twin[1], rtol=1e-13)
        assert got[2] == pytest.approx(twin[2], rel=1e-13)


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
def test_confusion_scores_of_an_empty_matrix(compiled: bool) -> None:
    per_class, averaged, overall = kernels.confusion_scores(np.zeros((3, 3)), compiled=compiled)
    assert np.isnan(per_class[:, 0]).all() and (per_class[:, 1:] == 0).all()
    assert np.isnan(overall)
    np.testing.assert_array_equal(
        np.isnan(averaged), [False, False, True] * 2 + [False, True, True]
    )


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
def test_pelz_good_cdf_is_scipys_series(compiled: bool) -> None:
    # SciPy's own scalar series, value by value, over the sizes and statistics the p-values
    # send it (n > 140, z = sqrt(n) d from the far left tail to the KS test's usual range).
    from scipy.stats._ksstats import _kolmogn_PelzGood

    rng = np.random.default_rng(5)
    n = rng.integers(141, 200_000, 500).astype(float)
    d = rng.uniform(0.05, 3.0, 500) / np.sqrt(n)
    expected = np.array([_kolmogn_PelzGood(a, b, cdf=True) for a, b in zip(n, d, strict=True)])
    got = kernels.pelz_good_cdf(n, d, compiled=compiled)
    assert np.allclose(got, expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
def test_probabilities_within(compiled: bool) -> None:
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(10), size=500)
    assert kernels.probabilities_within(probs, 1e-9, compiled=compiled)
    for row, column, value in ((0, 0, np.nan), (499, 9, np.inf), (7, 3, -1e-300), (3, 2, 1.5)):
        bad = probs.copy()
        bad[row, column] = value
        assert not kernels.probabilities_within(bad, 1.0, compiled=compiled), value
    off = probs.copy()
    off[250] *= 1 + 2e-3  # sums to 1.002
    assert not kernels.probabilities_within(off, 1e-3, compiled=compiled)
    assert kernels.probabilities_within(off, 3e-3, compiled=compiled)


@pytest.mark.parametrize("n_classes", [2, 3, 10])
@pytest.mark.parametrize("labels", ["all", "some", "none", "absent"])
def test_batch_counts_equal_their_definitions(n_classes: int, labels: str) -> None:
    # Each counter against its definition written out row by row, for both implementations.
    rng = np.random.default_rng(n_classes)
    probs = rng.dirichlet(np.ones(n_classes) * 0.4, size=300)
    probs[0] = 1 / n_classes  # ties: the first class (argmax), or not above the threshold
    probs[1, :] = 0.0
    probs[1, -1] = 1.0  # confidence 1.0: the last bin
    label_vec = {
        "all": rng.integers(0, n_classes, 300),
        "some": np.where(rng.random(300) < 0.5, rng.integers(0, n_classes, 300), -1),
        "none": np.full(300, -1),
        "absent": None,
    }[labels]
    results = []
    for compiled in (True, False):
        predicted = kernels.predicted_classes(probs, 0.5, compiled=compiled)
        expected_pred = (
            (probs[:, 1] > 0.5).astype(int) if n_classes == 2 else np.argmax(probs, axis=1)
        )
        np.testing.assert_array_equal(predicted, expected_pred)
        results.append(kernels.batch_counts(probs, predicted, label_vec, 15, compiled=compiled))
    predicted = expected_pred
    confidence = probs[np.arange(300), predicted]
    bins = np.minimum(np.floor(confidence * 15).astype(int), 14)
    for got in results:
        np.testing.assert_array_equal(got.pred_counts, np.bincount(predicted, minlength=n_classes))
        for j in range(n_classes):
            np.testing.assert_allclose(got.expected_confusion[:, j], probs[predicted == j].sum(0))
            for b in range(15):
                assert got.confidence_rows[j, b] == np.sum((predicted == j) & (bins == b))
        assert got.confidence_sq_sum == pytest.approx(np.sum(confidence**2), rel=1e-12)
        has = np.zeros(300, bool) if label_vec is None else label_vec >= 0
        y = np.zeros(0, int) if label_vec is None else label_vec[has]
        p_true = probs[has][np.arange(y.size), y]
        onehot = np.eye(n_classes)[y]
        confusion = np.zeros((n_classes, n_classes), int)
        np.add.at(confusion, (y, predicted[has]), 1)
        np.testing.assert_array_equal(got.confusion, confusion)
        eps = np.finfo(float).eps
        log_loss = -np.log(np.clip(p_true, eps, 1 - eps)).sum()
        assert got.log_loss_sum == pytest.approx(log_loss, rel=1e-12, abs=1e-12)
        brier = ((probs[has] - onehot) ** 2).sum()
        assert got.brier_sum == pytest.approx(brier, rel=1e-12, abs=1e-9)
        for b in range(15):
            in_bin = bins[has] == b
            assert got.reliability_rows[b] == in_bin.sum()
            assert got.reliability_confidence_sum[b] == pytest.approx(confidence[has][in_bin].sum())
            assert got.reliability_correct[b] == np.sum(in_bin & (predicted[has] == y))


def test_replacement_slots_equal_the_numpy_reservoir_step() -> None:
    # The same draws give the same (slot, row) pairs: a seeded window samples the same rows
    # with or without numba. Fill only, fill then replacement, replacement only, collisions
    # (a small capacity: many rows draw one slot, the last one wins).
    from mlwatcher.metrics.reservoir import choose_slots

    cases = [(0, 500, 1000), (800, 500, 1000), (5000, 500, 1000), (10**6, 500, 10_000)]
    cases += [(0, 50, 10), (3, 500, 5), (7, 1, 8), (10, 1, 8)]
    for seen, rows, capacity in cases:
        fast = choose_slots(seen, rows, capacity, np.random.default_rng(seen), compiled=True)
        twin = choose_slots(seen, rows, capacity, np.random.default_rng(seen), compiled=False)
        for a, b in zip(fast, twin, strict=True):
            np.testing.assert_array_equal(a, b)
        assert np.all(np.diff(fast[0]) > 0)  # increasing, distinct slots


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
def test_scatter_rows(compiled: bool) -> None:
    rng = np.random.default_rng(9)
    into = (np.zeros((12, 3)), np.full(12, -1), np.full((4, 12), np.nan))
    slots = np.array([0, 5, 11])
    probs, labels, features = rng.random((3, 3)), np.array([2, 0, 1]), rng.random((3, 4))
    kernels.scatter_rows(slots, probs, labels, features, into, compiled=compiled)
    np.testing.assert_array_equal(into[0][slots], probs)
    np.testing.assert_array_equal(into[1][slots], labels)
    np.testing.assert_array_equal(into[2][:, slots], features.T)
    assert np.isnan(into[2][:, 1]).all() and into[1][1] == -1  # other slots untouched


def test_the_engine_runs_from_numba_cache_in_a_fresh_process(tmp_path: Path) -> None:
    # Loops loaded from numba's on-disk cache are other machine code paths than loops just
    # compiled (a cached recursive loop crashed there): run a close on two threads in two
    # fresh processes sharing one cache directory, the first compiling, the second loading.
    script = (
        "import numpy as np\n"
        "from mlwatcher.metrics import ReferenceProfile, WindowState, warm_up\n"
        "warm_up()\n"
        "rng = np.random.default_rng(0)\n"
        "state = WindowState(10, 2000, 40, seed=1)\n"
        "state.update(rng.dirichlet(np.ones(10), 2000), rng.integers(0, 10, 2000),\n"
        "             rng.random((2000, 40)))\n"
        "profile = ReferenceProfile.from_data(rng.random((3000, 40)))\n"
        "print(len(state.metric_columns(reference=profile).value))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
        for _ in range(2)
    ]
    for run in outputs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert outputs[0].stdout == outputs[1].stdout
    assert any(tmp_path.rglob("*.nbi"))  # the second run had a cache to load
