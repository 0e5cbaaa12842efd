"""``decent report [STUDY]`` and ``decent export STUDY``: read the results store."""

from __future__ import annotations

from pathlib import Path

import typer

from decent.cli._common import console, fail, out_option, user_errors

REPORT_HELP = """Write a self-contained HTML report (figures, final metrics, configs) of a study.

\b
Examples:
  decent report                      # the most recent study in ./results
  decent report flagship --out results
  decent report dsgd --dest /tmp/dsgd-report
"""

EXPORT_HELP = """Export a study's records (or runs, or final metrics) to CSV or Parquet.

\b
Examples:
  decent export flagship --format csv                  # -> results/flagship.records.csv
  decent export flagship --format parquet --table final --dest final.parquet
"""


def _open_store(out: Path):  # type: ignore[no-untyped-def]
    from decent.results import Store

    return Store(out, readonly=True)  # a reader never changes the store


def _check_study(store, study: str) -> None:  # type: ignore[no-untyped-def]
    if study not in store.studies():
        raise fail(
            f"error: no study {study!r} in {store.path}; studies: "
            f"{', '.join(store.studies()) or '(none)'}"
        )


def report(
    study: str | None = typer.Argument(None, help="Study (default: the most recent)."),
    out: Path = out_option(),
    dest: Path | None = typer.Option(
        None, "--dest", help="Report directory (default: OUT/report/STUDY)."
    ),
) -> None:
    from decent.report import write_report
    from decent.results import safe_name
    from decent.results._files import check_folder

    with user_errors(), _open_store(out) as store:
        if study is None:  # the study of the most recently created run
            runs = store.runs()
            if runs.empty:
                raise fail(f"error: the store {store.path} has no runs yet")
            study = str(runs.sort_values("created_at")["study"].iloc[-1])
        else:
            _check_study(store, study)
        folder = dest or out / "report" / safe_name(study)
        check_folder(folder, root=None if dest else out)  # never write through a link
        path = write_report(store, study, folder)
    console.print(f"report: {path}", markup=False)


def export(
    study: str = typer.Argument(..., help="Study to export."),
    format: str = typer.Option("csv", "--format", "-f", help="csv or parquet."),
    table: str = typer.Option("records", "--table", help="records, runs or final."),
    out: Path = out_option(),
    dest: Path | None = typer.Option(
        None, "--dest", help="Output file (default: OUT/STUDY.TABLE.FORMAT)."
    ),
) -> None:
    from decent.results import export as export_study
    from decent.results import safe_name

    with user_errors(), _open_store(out) as store:
        _check_study(store, study)
        target = dest or out / f"{safe_name(study)}.{table}.{format}"
        path = export_study(store, study, target, format, table=table)
    console.print(f"wrote {path}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``decent report`` and ``decent export`` to ``app``."""
    app.command("report", help=REPORT_HELP)(report)
    app.command("export", help=EXPORT_HELP)(export)
