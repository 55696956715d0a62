"""ReferenceProfile storage and the ``reference build`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from metrics_helpers import value

from mlwatcher.metrics import ReferenceProfile, WindowState, compute_metrics
from mlwatcher.reference_cli import reference


def _frame(rng: np.random.Generator, n: int = 600) -> pd.DataFrame:
    probs = rng.dirichlet(np.ones(3), size=n)
    return pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "income": rng.lognormal(10, 1, n),
            "colour": rng.integers(0, 4, n),
            "p_0": probs[:, 0],
            "p_1": probs[:, 1],
            "p_2": probs[:, 2],
        }
    )


def _assert_same(a: ReferenceProfile, b: ReferenceProfile) -> None:
    assert (a.n_features, a.feature_names, a.categorical, a.threshold, a.n_classes) == (
        b.n_features,
        b.feature_names,
        b.categorical,
        b.threshold,
        b.n_classes,
    )
    assert a.numeric.keys() == b.numeric.keys() and a.categories.keys() == b.categories.keys()
    for j, ref in a.numeric.items():
        other = b.numeric[j]
        np.testing.assert_array_equal(ref.sample, other.sample)
        np.testing.assert_array_equal(ref.edges, other.edges)
        np.testing.assert_array_equal(ref.proportions, other.proportions)
        assert ref.std == other.std
    for j, (values, counts) in a.categories.items():
        np.testing.assert_array_equal(values, b.categories[j][0])
        np.testing.assert_array_equal(counts, b.categories[j][1])
    np.testing.assert_array_equal(a.pred_class_counts, b.pred_class_counts)


def test_profile_round_trips_through_bytes_and_files(tmp_path: Path) -> None:
    frame = _frame(np.random.default_rng(0))
    profile = ReferenceProfile.from_data(
        frame[["age", "income", "colour"]],
        frame[["p_0", "p_1", "p_2"]],
        categorical_features=["colour"],
        max_sample=100,
    )
    assert profile.numeric[0].sample.size == 100
    _assert_same(profile, ReferenceProfile.from_bytes(profile.to_bytes()))
    profile.save(tmp_path / "ref.npz")
    _assert_same(profile, ReferenceProfile.load(tmp_path / "ref.npz"))


def test_cli_builds_the_same_profile_from_csv_and_parquet(tmp_path: Path) -> None:
    frame = _frame(np.random.default_rng(1))
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_parquet(tmp_path / "train.parquet")
    runner = CliRunner()
    for name in ("train.csv", "train.parquet"):
        out = tmp_path / f"{name}.npz"
        result = runner.invoke(
            reference,
            [
                "build",
                str(tmp_path / name),
                "--output",
                str(out),
                "--categorical",
                "colour",
                "--proba-columns",
                "p_",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "3 features (1 categorical)" in result.output
    csv_profile = ReferenceProfile.load(tmp_path / "train.csv.npz")
    _assert_same(csv_profile, ReferenceProfile.load(tmp_path / "train.parquet.npz"))
    assert csv_profile.feature_names == ["age", "income", "colour"]
    assert csv_profile.n_classes == 3


def test_cli_refuses_unknown_categorical_column(tmp_path: Path) -> None:
    _frame(np.random.default_rng(2)).to_csv(tmp_path / "train.csv", index=False)
    result = CliRunner().invoke(
        reference,
        [
            "build",
            str(tmp_path / "train.csv"),
            "-o",
            str(tmp_path / "r.npz"),
            "--categorical",
            "nope",
        ],
    )
    assert result.exit_code != 0
    assert "unknown columns ['nope']" in result.output


def test_garbage_file_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="reference: not a reference profile"):
        ReferenceProfile.from_bytes(b"not a profile")


def test_from_window_uses_exact_counts_for_categorical_features() -> None:
    rng = np.random.default_rng(3)
    state = WindowState(2, max_buffer_size=20, n_features=2, categorical_features=[1], seed=0)
    feats = np.column_stack([rng.normal(size=300), rng.integers(0, 3, 300)])
    state.update(rng.dirichlet([1, 1], size=300), features=feats)
    profile = ReferenceProfile.from_window(state)
    values, counts = profile.categories[1]
    assert values.tolist() == [0.0, 1.0, 2.0] and counts.sum() == 300
    assert profile.numeric[0].sample.size == 20
    # The same rows as the current window: nothing drifts.
    points = compute_metrics(
        state.reservoir()[0],
        features=state.reservoir()[2],
        categorical_features=[1],
        reference=profile,
    )
    assert value(points, "feature_drift", feat_name="feat_0", stat="ks_stat") == 0.0
