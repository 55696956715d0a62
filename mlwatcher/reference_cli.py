"""``mlwatcher reference …``: build drift reference profiles from training data files."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from mlwatcher.metrics.reference import DEFAULT_MAX_SAMPLE, ReferenceProfile


def _read_table(path: Path):  # -> pandas.DataFrame (pandas imported lazily: CLI start-up)
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".txt") or suffix.endswith(".gz"):
        return pd.read_csv(path)
    raise click.BadParameter(
        f"expected a .csv or .parquet file, got {path.name!r}", param_hint="INPUT"
    )


@click.group()
def reference() -> None:
    """Drift reference profiles (baselines built from training data)."""


@reference.command("build")
@click.argument(
    "input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the profile (.npz).",
)
@click.option(
    "--categorical", multiple=True, metavar="COL", help="A categorical feature column (repeatable)."
)
@click.option(
    "--proba-columns",
    metavar="PREFIX",
    default=None,
    help="Columns starting with PREFIX hold predicted probabilities, in column order; "
    "every other column is a feature.",
)
@click.option(
    "--labels-column",
    metavar="COL",
    default=None,
    help="Column of true class indices (empty or -1: unknown); with --proba-columns, fits "
    "the calibration map used to estimate performance without labels.",
)
@click.option(
    "--threshold",
    default=0.5,
    show_default=True,
    help="Binary decision threshold for the predicted-class distribution.",
)
@click.option(
    "--max-sample",
    default=DEFAULT_MAX_SAMPLE,
    show_default=True,
    help="Rows kept per numeric series for KS and Wasserstein.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the row subsample.")
def build(
    input_path: Path,
    output: Path,
    categorical: tuple[str, ...],
    proba_columns: str | None,
    labels_column: str | None,
    threshold: float,
    max_sample: int,
    seed: int,
) -> None:
    """Read a CSV/Parquet table of training data and write a reference profile."""
    frame = _read_table(input_path)
    labels = None
    if labels_column is not None:
        if labels_column not in frame.columns:
            raise click.BadParameter(
                f"unknown column {labels_column!r}", param_hint="--labels-column"
            )
        if not proba_columns:
            raise click.UsageError(
                "--labels-column needs --proba-columns (calibration maps probabilities)"
            )
        labels = frame[labels_column].fillna(-1).to_numpy()
        frame = frame.drop(columns=[labels_column])
    proba = None
    if proba_columns:
        cols = [c for c in frame.columns if str(c).startswith(proba_columns)]
        if len(cols) < 2:
            raise click.BadParameter(
                f"expected at least 2 columns starting with {proba_columns!r}, found {cols}",
                param_hint="--proba-columns",
            )
        proba = frame[cols].to_numpy(dtype=np.float64)
        frame = frame.drop(columns=cols)
    missing = [c for c in categorical if c not in frame.columns]
    if missing:
        raise click.BadParameter(f"unknown columns {missing}", param_hint="--categorical")
    features = frame if len(frame.columns) else None
    if features is None and proba is None:
        raise click.UsageError("the input has no feature or probability columns")
    try:
        profile = ReferenceProfile.from_data(
            features,
            proba,
            labels=labels,
            categorical_features=list(categorical),
            threshold=threshold,
            max_sample=max_sample,
            seed=seed,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    profile.save(output)
    click.echo(
        f"wrote {output}: {profile.n_features} features"
        f" ({len(profile.categorical)} categorical), {len(frame)} rows"
        + (f", {proba.shape[1]} classes" if proba is not None else "")
        + (
            f", calibration map from {profile.calibration.rows.sum()} labelled rows"
            if profile.calibration is not None
            else ""
        )
    )
