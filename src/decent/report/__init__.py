"""Figures and a self-contained HTML report, read from the results store only.

Nothing here runs training: everything starts from ``decent.results`` records::

    from decent.results import load
    from decent.report import plot_metric, write_report

    fig = plot_metric(load("results", "sweep"), "eval/subopt@mean", x="comm/bytes")
    write_report("results", "sweep", "results/report")  # -> results/report/report.html
"""

from decent.report._html import figure_to_data_uri, report_figures, write_report
from decent.report._plots import (
    BANDS,
    ReportError,
    aggregate,
    config_columns,
    draw_topology,
    plot_consensus,
    plot_metric,
    plot_node_spread,
    topology_figure,
)

__all__ = [
    "BANDS",
    "ReportError",
    "aggregate",
    "config_columns",
    "draw_topology",
    "figure_to_data_uri",
    "plot_consensus",
    "plot_metric",
    "plot_node_spread",
    "report_figures",
    "topology_figure",
    "write_report",
]
