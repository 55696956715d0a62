"""Our performance estimation vs NannyML's CBPE on the same chunks (run by hand, not in CI).

NannyML pulls in FLAML, LightGBM and cloud-storage clients, so it is not a project
dependency. Run it in a throwaway environment::

    python3 -m venv /tmp/nml && /tmp/nml/bin/pip install nannyml statsmodels
    PYTHONPATH=$PWD /tmp/nml/bin/python -m benchmarks.bench_cbpe_nannyml

Data: the demo's digits models (``mlwatcher.demo.scenarios``). Reference = the held-out
rows with labels, scored by the good model (the same reference the demo gives the worker).
Analysis = chunks of ``CHUNK_ROWS`` rows drawn from the held-out rows, per scenario:
normal traffic, inverted inputs and the odd-digit model. Each chunk goes through NannyML's
CBPE (isotonic calibration, its default) and through a ``WindowState`` with our reference
profile (histogram-binning map) and without one (raw probabilities).
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pandas as pd

from mlwatcher.demo.offline import reference_profile
from mlwatcher.demo.scenarios import PIXEL_MAX, train_models
from mlwatcher.metrics import ReferenceProfile, WindowState

CHUNK_ROWS = 500
CHUNKS_PER_SCENARIO = 8
METRICS = {  # NannyML's name -> (our point, its extra properties)
    "accuracy": ("overall_accuracy", {}),
    "f1": ("f1", {"average": "macro"}),
    "precision": ("precision", {"average": "macro"}),
    "recall": ("recall", {"average": "macro"}),
}


def _frame(probs: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(probs, columns=[f"p{c}" for c in range(probs.shape[1])])
    frame["y_pred"] = probs.argmax(axis=1)
    frame["y_true"] = labels
    return frame


def _ours(probs: np.ndarray, labels: np.ndarray, reference) -> dict[str, float]:
    state = WindowState(probs.shape[1], 100, seed=0)
    state.update(probs, labels)
    points = state.metrics(reference=reference)
    out = {}
    for name, (what, extra) in METRICS.items():
        for prefix, key in (("estimated_", "estimated"), ("", "realised")):
            found = [p for p in points if p.what == prefix + what and dict(p.extra) == extra]
            found = [p for p in found if p.class_name is None]
            out[f"{key}_{name}"] = found[0].value
    return out


def main() -> None:
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # no calls home to segment.io
    import nannyml as nml

    warnings.filterwarnings("ignore")  # scikit-learn's zero-division warnings, per chunk

    rng = np.random.default_rng(0)
    models = train_models(seed=0)
    pixels, labels = models.traffic_inputs, models.traffic_labels
    ref_probs = models.predict_proba(models.good, pixels)
    # the demo's reference without its features (the chunks here carry no features)
    reference = ReferenceProfile.from_data(predict_proba=ref_probs, labels=labels)
    assert reference.calibration is not None
    assert np.array_equal(reference.calibration.rows, reference_profile(models).calibration.rows)
    classes = list(range(ref_probs.shape[1]))
    estimator = nml.CBPE(
        metrics=list(METRICS),
        y_pred_proba={c: f"p{c}" for c in classes},
        y_pred="y_pred",
        y_true="y_true",
        problem_type="classification_multiclass",
        chunk_size=CHUNK_ROWS,
    )
    started = time.perf_counter()
    estimator.fit(_frame(ref_probs, labels))
    fit_s = time.perf_counter() - started

    scenarios = {
        "normal": lambda x: models.predict_proba(models.good, x),
        "inverted_inputs": lambda x: models.predict_proba(models.good, PIXEL_MAX - x),
        "wrong_model": lambda x: models.predict_proba(models.bad, x),
    }
    chunks = []
    for scenario, score in scenarios.items():
        for _ in range(CHUNKS_PER_SCENARIO):
            rows = rng.integers(0, len(labels), size=CHUNK_ROWS)
            chunks.append((scenario, score(pixels[rows]), labels[rows]))
    analysis = pd.concat([_frame(p, y) for _, p, y in chunks], ignore_index=True)
    started = time.perf_counter()
    results = estimator.estimate(analysis).filter(period="analysis").to_df()
    nannyml_s = time.perf_counter() - started

    records = []
    ours_s = 0.0
    for index, (scenario, probs, truth) in enumerate(chunks):
        started = time.perf_counter()
        calibrated = _ours(probs, truth, reference)
        ours_s += time.perf_counter() - started
        raw = _ours(probs, truth, None)
        for name in METRICS:
            records.append(
                {
                    "scenario": scenario,
                    "chunk": index,
                    "metric": name,
                    "realised": calibrated[f"realised_{name}"],
                    "nannyml": float(results[(name, "value")].iloc[index]),
                    "nannyml_realised": float(results[(name, "realized")].iloc[index]),
                    "ours": calibrated[f"estimated_{name}"],
                    "ours_raw": raw[f"estimated_{name}"],
                }
            )
    table = pd.DataFrame(records)
    assert np.allclose(table["realised"], table["nannyml_realised"]), "realised metrics differ"
    table["ours - nannyml"] = table["ours"] - table["nannyml"]
    table["raw - nannyml"] = table["ours_raw"] - table["nannyml"]
    table["nannyml err"] = table["nannyml"] - table["realised"]
    table["ours err"] = table["ours"] - table["realised"]
    summary = table.groupby(["scenario", "metric"], sort=False).agg(
        realised=("realised", "mean"),
        nannyml=("nannyml", "mean"),
        ours=("ours", "mean"),
        ours_raw=("ours_raw", "mean"),
        max_abs_ours_minus_nannyml=("ours - nannyml", lambda s: s.abs().max()),
        max_abs_raw_minus_nannyml=("raw - nannyml", lambda s: s.abs().max()),
        mae_nannyml=("nannyml err", lambda s: s.abs().mean()),
        mae_ours=("ours err", lambda s: s.abs().mean()),
    )
    pd.set_option("display.width", 200)
    print(f"{len(chunks)} chunks of {CHUNK_ROWS} rows, {len(classes)} classes")
    print(summary.round(4).to_string())
    print(
        f"\nNannyML: fit {fit_s:.2f} s, estimate {1000 * nannyml_s / len(chunks):.1f} ms/chunk;"
        f" ours (update + metrics, every point): {1000 * ours_s / len(chunks):.1f} ms/chunk"
    )


if __name__ == "__main__":
    main()
