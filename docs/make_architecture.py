"""Draw docs/architecture.png: the MLWatcher pipeline. Run: python docs/make_architecture.py"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUTPUT = Path(__file__).with_name("architecture.png")

BOXES: dict[str, tuple[float, float, float, float, str, str]] = {
    # name: (x, y, width, height, colour, label)
    "models": (0.2, 3.6, 2.6, 1.6, "#d1e5f0", "model processes\nMonitoringAgent\n.collect_data()"),
    "predictions": (3.6, 4.0, 2.4, 0.9, "#fddbc7", "topic\nmlwatcher.predictions"),
    "workers": (
        6.8,
        3.6,
        2.6,
        1.6,
        "#d9f0d3",
        "stream workers (Faust)\nevent-time windows,\nreservoir + metrics",
    ),
    "metrics": (10.2, 4.0, 2.4, 0.9, "#fddbc7", "topic\nmlwatcher.metrics"),
    "parquet_sink": (13.4, 5.0, 2.4, 0.9, "#e7d4e8", "sink parquet"),
    "anodot_sink": (13.4, 3.0, 2.4, 0.9, "#e7d4e8", "sink anodot"),
    "parquet": (16.6, 5.0, 2.2, 0.9, "#f0f0f0", "Parquet data set\n→ mlwatcher report"),
    "anodot": (16.6, 3.0, 2.2, 0.9, "#f0f0f0", "Anodot\nMetrics 2.0 API"),
    "dead_letter": (6.8, 1.2, 2.6, 0.9, "#fddbc7", "topic\nmlwatcher.dead-letter"),
    "reference": (6.8, 6.3, 2.6, 0.9, "#f0f0f0", "reference profiles\n(mlwatcher reference)"),
    "changelog": (10.2, 1.9, 2.4, 0.9, "#fddbc7", "changelog topics\n(window state)"),
}

ARROWS = [
    ("models", "predictions", "Avro batches\nkey = agent_id"),
    ("predictions", "workers", ""),
    ("workers", "metrics", "1 record per\nagent × window"),
    ("metrics", "parquet_sink", ""),
    ("metrics", "anodot_sink", ""),
    ("parquet_sink", "parquet", ""),
    ("anodot_sink", "anodot", ""),
    ("workers", "dead_letter", "late / poison"),
    ("reference", "workers", "drift baseline"),
    ("workers", "changelog", ""),
]


def _centre(name: str) -> tuple[float, float]:
    x, y, w, h, _, _ = BOXES[name]
    return x + w / 2, y + h / 2


def _edge(name: str, towards: str) -> tuple[float, float]:
    """Point on the border of box ``name`` facing box ``towards``."""
    x, y, w, h, _, _ = BOXES[name]
    (cx, cy), (tx, ty) = _centre(name), _centre(towards)
    if abs(tx - cx) >= abs(ty - cy) * 2:  # mostly horizontal
        return (x + w if tx > cx else x), cy
    return cx, (y + h if ty > cy else y)


def main() -> None:
    figure, axis = plt.subplots(figsize=(16, 6.4))
    axis.set_xlim(0, 19)
    axis.set_ylim(0.6, 7.6)
    axis.axis("off")
    for x, y, w, h, colour, label in BOXES.values():
        axis.add_patch(
            FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#444444")
        )
        axis.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=9)
    for start, end, label in ARROWS:
        (x0, y0), (x1, y1) = _edge(start, end), _edge(end, start)
        axis.add_patch(
            FancyArrowPatch(
                (x0, y0),
                (x1, y1),
                arrowstyle="-|>",
                mutation_scale=14,
                color="#333333",
                shrinkA=2,
                shrinkB=2,
            )
        )
        if label and abs(y1 - y0) < 0.5:  # horizontal: label above the arrow, between boxes
            axis.text((x0 + x1) / 2, y0 + 0.55, label, ha="center", fontsize=8, color="#333")
        elif label:  # vertical: label beside the arrow
            axis.text((x0 + x1) / 2 + 0.1, (y0 + y1) / 2, label, ha="left", va="center", fontsize=8)
    axis.text(
        0.2,
        7.3,
        "MLWatcher: Kafka-native monitoring of ML classifiers",
        fontsize=13,
        fontweight="bold",
    )
    axis.text(
        0.2,
        0.8,
        "Kafka (Apache Kafka in production, or the embedded Tansu broker for "
        "`mlwatcher demo`); workers and sinks scale with partitions",
        fontsize=9,
        color="#555555",
    )
    figure.savefig(OUTPUT, dpi=110, bbox_inches="tight")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
