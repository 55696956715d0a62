"""The label metrics of a record against scikit-learn on exactly the rows that were labelled."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss

from mlwatcher.metrics.inputs import predicted_classes
from mlwatcher.schemas import MetricRecord


def point_values(record: MetricRecord) -> dict[tuple, float]:
    return {(p.what, p.class_name, tuple(sorted(p.extra.items()))): p.value for p in record.points}


def assert_label_metrics(
    record: MetricRecord, probs: np.ndarray, y: np.ndarray, n_classes: int
) -> None:
    got = point_values(record)
    pred = predicted_classes(probs.astype(np.float64), 0.5)
    classes = range(n_classes)
    assert got[("labelled_rows", None, ())] == y.size
    assert got[("overall_accuracy", None, ())] == pytest.approx(accuracy_score(y, pred))
    for average in ("macro", "weighted"):
        assert got[("f1", None, (("average", average),))] == pytest.approx(
            f1_score(y, pred, average=average, labels=classes, zero_division=0)
        )
    assert got[("log_loss", None, ())] == pytest.approx(
        log_loss(y, probs.astype(np.float64), labels=classes), rel=1e-6
    )
    matrix = confusion_matrix(y, pred, labels=classes)
    for i in classes:
        for j in classes:
            key = ("confusion_count", f"class_{i}", (("pred_class", f"class_{j}"),))
            assert got[key] == matrix[i, j]
