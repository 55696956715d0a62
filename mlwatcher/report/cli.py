"""``mlwatcher report``: charts and an HTML page from the Parquet metrics."""

from __future__ import annotations

import click


@click.command()
@click.argument("parquet_dir", type=click.Path(exists=True))
@click.option(
    "--output",
    "-o",
    "output_dir",
    envvar="MLWATCHER_REPORT_OUTPUT",
    default="mlwatcher-report",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for the PNG charts and report.html [env MLWATCHER_REPORT_OUTPUT].",
)
@click.option(
    "--reference",
    "references",
    multiple=True,
    metavar="AGENT=PATH",
    help="The agent's reference profile (as given to the worker); when built with labels, "
    "its reliability diagram is drawn next to the latest window's. Repeatable.",
)
def report(parquet_dir: str, output_dir: str, references: tuple[str, ...]) -> None:
    """Render PNG charts and a self-contained HTML page from PARQUET_DIR (the Parquet sink's
    output): per agent the predicted-class mix, rows per window, confidence, accuracy and
    macro-F1, realised vs estimated accuracy, feature drift and a reliability diagram, plus
    a table of the windows flagged as drifted."""
    from mlwatcher.metrics.inputs import MetricInputError
    from mlwatcher.metrics.reference import ReferenceProfile
    from mlwatcher.report.data import ReportDataError
    from mlwatcher.report.render import build_report

    profiles = {}
    for pair in references:
        agent, sep, path = pair.partition("=")
        if not (sep and agent and path):
            raise click.BadParameter(f"expected AGENT=PATH, got {pair!r}", param_hint="--reference")
        try:
            profiles[agent] = ReferenceProfile.load(path)
        except (OSError, MetricInputError) as error:
            raise click.BadParameter(f"{path}: {error}", param_hint="--reference") from error
    try:
        result = build_report(parquet_dir, output_dir, profiles)
    except ReportDataError as error:
        raise click.ClickException(str(error)) from error
    for name, path in result.images.items():
        click.echo(f"chart {name}: {path}")
    click.echo(f"{len(result.drifted)} windows flagged as drifted")
    click.echo(f"report: {result.html_path}")
