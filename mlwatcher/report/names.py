"""The metric names (``what``, ``stat``, ``class_name``) the report reads, in one place.

They follow the metric engine's documented set (``docs/metrics.md``); if the engine renames a
metric, this is the only file of the report to change.
"""

from __future__ import annotations

PREDICTION_FREQ = "prediction_freq"
ROWS_SEEN = "rows_seen"
LABELLED_ROWS = "labelled_rows"
PRED1 = "max_prediction_proba"
SPREAD12 = "spread12_prediction_proba"
F1_PER_CLASS = "f1"

#: overall accuracy: one point per window without class_name
ACCURACY_OVERALL = "overall_accuracy"
#: macro-F1: the ``f1`` point without class_name whose ``extra`` has ``average=macro``
AVERAGE_KEY = "average"
MACRO = "macro"

FEATURE_DRIFT = "feature_drift"
DATASET_DRIFT = "dataset_drift"
PREDICTION_DRIFT = "predicted_class_drift"
PRED1_DRIFT = "pred1_drift"
DRIFT_FLAG_STAT = "drifted"
DRIFT_SCORE_STAT = "psi"
DRIFT_SHARE_STAT = "share"
#: the engine's default: the data set drifts when at least half of its features do
DATASET_DRIFT_SHARE = 0.5

#: performance without labels, and its uncertainty
ESTIMATED_ACCURACY = "estimated_overall_accuracy"
ESTIMATED_ACCURACY_STDERR = "estimated_overall_accuracy_stderr"
ACCURACY_STDERR = "overall_accuracy_stderr"
#: reliability diagram: one point per confidence bin, the bin index in ``extra`` (``bin=k``)
BIN_ROWS = "calibration_bin_rows"
BIN_CONFIDENCE = "calibration_bin_confidence"
BIN_ACCURACY = "calibration_bin_accuracy"
BIN_KEY = "bin"
#: the engine's equal-width confidence bins: bin k is [k/15, (k+1)/15)
CONFIDENCE_BINS = 15
ECE = "expected_calibration_error"
