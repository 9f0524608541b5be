"""The reports screen: the team's numbers with charts drawn in the terminal.

The same figures as ``deskq report`` (both come from :func:`store.report.for_settings`):
volume per day, backlog over time, median and 90th percentile first response and
resolution per group, SLA attainment and satisfaction, then the table of every group.
``p`` changes the period, ``b`` the grouping, ``f`` the queue.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual_plotext import PlotextPlot

from store.report import BY, Figures, Report, ReportError
from tui.cli_report import COLUMNS, cells, title
from tui.desk import Desk
from tui.dialogs import notice
from tui.safe_text import one_line

log = logging.getLogger(__name__)

PERIODS = ("7d", "30d", "90d", "1y", "all")
LABEL = 14  # characters of a group's name on a chart axis
GROUPS_CHARTED = 8  # the largest groups get bars; the table has them all


def label(text: str) -> str:
    """A group's name as an axis label: one line, control characters removed, short."""
    return one_line(text, LABEL) or "-"


def hours(seconds: float | None) -> float:
    """Seconds as hours for a chart (0 when there is no figure)."""
    return round((seconds or 0.0) / 3600, 1)


class ReportsScreen(Screen[None]):
    """Charts and the table of the team's numbers."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,escape", "back", "Back"),
        Binding("p", "period", "Period"),
        Binding("b", "group_by", "Group by"),
        Binding("f", "queue", "Queue"),
        Binding("ctrl+l", "reload", "Reload", show=False),
    ]

    def __init__(self, desk: Desk, queues: list[str]) -> None:
        super().__init__()
        self.desk = desk
        self.queues: list[str | None] = [None, *queues]
        self.period, self.by, self.queue = "30d", "queue", None
        self.report: Report | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="report-title")
        with VerticalScroll(id="report-body"):
            with Horizontal(classes="report-row"):
                yield PlotextPlot(id="volume")
                yield PlotextPlot(id="backlog")
            with Horizontal(classes="report-row"):
                yield PlotextPlot(id="times")
                yield PlotextPlot(id="attainment")
                yield PlotextPlot(id="satisfaction")
            yield DataTable(id="report-table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.action_reload()

    # ------------------------------------------------------------------ actions

    def action_back(self) -> None:
        self.dismiss(None)

    def action_period(self) -> None:
        self.period = PERIODS[(PERIODS.index(self.period) + 1) % len(PERIODS)]
        self.action_reload()

    def action_group_by(self) -> None:
        self.by = BY[(BY.index(self.by) + 1) % len(BY)]
        self.action_reload()

    def action_queue(self) -> None:
        self.queue = self.queues[(self.queues.index(self.queue) + 1) % len(self.queues)]
        self.action_reload()

    @work(thread=True, group="report", exclusive=True, exit_on_error=False)
    def action_reload(self) -> None:
        self.app.call_from_thread(self._loading)
        try:
            report = self.desk.report(self.period, self.queue, self.by)
        except ReportError as exc:
            self.app.call_from_thread(notice, self.app, str(exc), "error")
            return
        except Exception as exc:  # a failed report is shown, never swallowed
            log.warning("the report failed", exc_info=exc)
            self.app.call_from_thread(notice, self.app, f"the report failed: {exc}", "error", 10)
            return
        self.app.call_from_thread(self.show_report, report)

    def _loading(self) -> None:
        self.query_one("#report-title", Static).update(Text("computing the report…"))

    # ------------------------------------------------------------------ drawing

    def show_report(self, report: Report) -> None:
        """Draw every chart and fill the table."""
        self.report = report
        keys = "p period · b group by · f queue"
        self.query_one("#report-title", Static).update(
            Text(f"{title(report)}    [{self.period}]  {keys}")
        )
        self._volume(report)
        self._backlog(report)
        shown = report.groups[:GROUPS_CHARTED]
        if self.by == "week":
            shown = report.groups[-GROUPS_CHARTED:]
        self._times(shown)
        self._attainment(shown)
        self._satisfaction(report.total)
        self._table(report)

    def _plot(self, widget_id: str, heading: str) -> Any:
        widget = self.query_one(f"#{widget_id}", PlotextPlot)
        plt = widget.plt
        plt.clear_figure()
        plt.title(heading)
        widget.refresh()
        return plt

    def _days(self, report: Report) -> tuple[list[int], list[str]]:
        days = report.days
        step = max(len(days) // 6, 1)
        ticks = list(range(0, len(days), step))
        return ticks, [days[i].day.strftime("%d %b") for i in ticks]

    def _volume(self, report: Report) -> None:
        plt = self._plot("volume", "Received and resolved per day")
        if not report.days:
            return
        x = list(range(len(report.days)))
        plt.plot(x, [d.received for d in report.days], label="received", marker="braille")
        plt.plot(x, [d.resolved for d in report.days], label="resolved", marker="braille")
        plt.xticks(*self._days(report))

    def _backlog(self, report: Report) -> None:
        plt = self._plot("backlog", "Backlog (open at the end of the day)")
        if not report.days:
            return
        x = list(range(len(report.days)))
        plt.plot(x, [d.backlog for d in report.days], marker="braille")
        plt.xticks(*self._days(report))

    def _times(self, groups: list[Figures]) -> None:
        plt = self._plot("times", "Business hours: median / p90")
        if not groups:
            return
        names = [label(g.key) for g in groups]
        plt.multiple_bar(
            names,
            [
                [hours(g.first_response["median"]) for g in groups],
                [hours(g.first_response["p90"]) for g in groups],
                [hours(g.resolution["median"]) for g in groups],
                [hours(g.resolution["p90"]) for g in groups],
            ],
            labels=["1st resp. median", "1st resp. p90", "resolution median", "resolution p90"],
        )

    def _attainment(self, groups: list[Figures]) -> None:
        plt = self._plot("attainment", "SLA met (%)")
        decided = [
            g
            for g in groups
            if g.first_response_met
            + g.first_response_breached
            + g.resolution_met
            + g.resolution_breached
        ]
        if not decided:
            return
        plt.multiple_bar(
            [label(g.key) for g in decided],
            [
                [
                    round(
                        100
                        * (Figures.attainment(g.first_response_met, g.first_response_breached) or 0)
                    )
                    for g in decided
                ],
                [
                    round(100 * (Figures.attainment(g.resolution_met, g.resolution_breached) or 0))
                    for g in decided
                ],
            ],
            labels=["first response", "resolution"],
        )
        plt.ylim(0, 100)

    def _satisfaction(self, total: Figures) -> None:
        mean = f"{total.satisfaction:.1f}" if total.satisfaction is not None else "-"
        plt = self._plot("satisfaction", f"Ratings (mean {mean}, {total.rated} rated)")
        plt.bar(["1", "2", "3", "4", "5"], total.ratings)

    def _table(self, report: Report) -> None:
        table = self.query_one("#report-table", DataTable)
        table.clear(columns=True)
        table.add_columns(report.by, *COLUMNS)
        for g in report.groups:
            table.add_row(Text(one_line(g.key, 40)), *(Text(c, justify="right") for c in cells(g)))
        table.add_row(
            Text("total", style="bold"),
            *(Text(c, style="bold", justify="right") for c in cells(report.total)),
        )
