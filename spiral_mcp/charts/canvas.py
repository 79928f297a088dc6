"""The drawing surface every chart shares: matplotlib loaded lazily, one fixed size and style,
deterministic bytes out.

matplotlib costs a second or so to import; the server and every tool that never draws must not
pay it, so nothing here imports it at module level: :func:`drawing` does, once. Figures are
built through the object API (``matplotlib.figure.Figure`` on an Agg canvas), never pyplot, so
no global figure registry grows and no GUI backend is ever looked for.
"""

from __future__ import annotations

import datetime
import functools
import io
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["CATEGORY_COLOURS", "FORMATS", "MIME_TYPES", "PALETTE", "SIZES", "ChartError",
           "drawing", "is_compact", "no_data", "parse_day", "parse_instant", "time_axis"]

FORMATS = ("png", "svg")
MIME_TYPES = {"png": "image/png", "svg": "image/svg+xml"}

# full: 8 x 4.5 inches, 1280 x 720 px as PNG at 160 dpi; as SVG 576 x 324 pt, which the console
# scales to its column. compact (a phone's column, 390 px): 4 x 3.25 inches, 640 x 520 px, with
# the same fonts, so text is twice as large against the chart; its legend goes below, its title
# wraps and its time axis has fewer ticks.
SIZES = {"full": (8.0, 4.5), "compact": (4.0, 3.25)}
_PNG_DPI = 160
_COMPACT_STYLE = {"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8}
_COMPACT_TITLE_CHARS = 46
_COMPACT_LABEL_CHARS = 24
# Room either side of a time axis's first and last instants (a share of its span): a point at
# the window's end is drawn whole, not cut in half by the edge.
_TIME_MARGIN = 0.03
# Okabe-Ito: told apart by people with any common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")
CATEGORY_COLOURS = {"todo": "#BBBBBB", "in_progress": "#0072B2", "blocked": "#D55E00",
                    "in_review": "#CC79A7", "done": "#009E73", "cancelled": "#E8E8E8"}
_STYLE = {
    # DejaVu Sans ships inside matplotlib: no system font looked up, none fetched.
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#E0E0E0",
    "legend.fontsize": 9,
    "legend.frameon": False,
    # Deterministic SVG: element ids from a fixed salt, text as paths (no font needed to view).
    "svg.hashsalt": "spiral-mcp",
    "svg.fonttype": "path",
    "path.simplify": True,
}
# Agg and the font cache are not meant for several threads drawing at once; charts are drawn
# one at a time (the work is CPU-bound and holds the GIL anyway).
_LOCK = threading.Lock()


class ChartError(ValueError):
    """A chart cannot be drawn from what was given (unknown chart or format, too many points)."""


@functools.cache
def _matplotlib() -> tuple[Any, Any, Any]:
    """matplotlib's Figure, Agg canvas and dates module, imported and styled on first use."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    matplotlib.rcParams.update(_STYLE)
    from matplotlib import dates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg, dates


def is_compact(figure: Any) -> bool:
    """Whether ``figure`` is drawn at the compact size (for a phone's column)."""
    return figure.get_gid() == "compact"


def time_axis(axes: Any, limits: list[Any] | None = None) -> None:
    """Dates on the x axis, as few and as short as fit; ``limits``: its first and last
    instants, which are drawn a little inside the edges."""
    dates = _matplotlib()[2]
    locator = dates.AutoDateLocator(minticks=3, maxticks=5 if is_compact(axes.figure) else 8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))
    if limits:
        first, last = limits[0], limits[-1]
        margin = (last - first) * _TIME_MARGIN
        axes.set_xlim(first - margin, last + margin)


@contextmanager
def drawing(fmt: str, sink: list[bytes], *, rows: int = 1, sharex: bool = False,
            size: str = "full") -> Iterator[tuple[Any, list[Any]]]:
    """A figure of ``size`` with ``rows`` axes stacked; on leaving, its ``fmt`` bytes go into
    ``sink``."""
    if fmt not in FORMATS:
        raise ChartError(f"unknown image format {fmt!r} (known: {', '.join(FORMATS)})")
    if size not in SIZES:
        raise ChartError(f"unknown chart size {size!r} (known: {', '.join(SIZES)})")
    figure_class, canvas_class, _ = _matplotlib()
    import matplotlib

    style = _COMPACT_STYLE if size == "compact" else {}
    with _LOCK, matplotlib.rc_context(style):
        figure = figure_class(figsize=SIZES[size], layout="constrained")
        if size == "compact":
            figure.set_gid(size)  # what time_axis reads (the full size's bytes stay as they were)
        canvas_class(figure)
        axes = list(figure.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0])
        yield figure, axes
        if size == "compact":
            _compacted(figure, axes)
        sink.append(_bytes(figure, fmt))


def _compacted(figure: Any, axes: list[Any]) -> None:
    """A drawn chart made for a narrow column: the title over the whole width (not only the
    axes', which long tick labels narrow) and wrapped, the legends beside the axes moved into
    one below them (beside, they would take half the width)."""
    handles: list[Any] = []
    labels: list[str] = []
    for ax in axes:
        if title := ax.get_title(loc="left"):
            ax.set_title("", loc="left")
            figure.suptitle(textwrap.fill(title, _COMPACT_TITLE_CHARS), x=0.02, ha="left",
                            fontsize=ax.title.get_fontsize())
        # A y label as long as the shorter side would run into the title.
        if len(label := ax.get_ylabel()) > _COMPACT_LABEL_CHARS:
            ax.set_ylabel(textwrap.fill(label, _COMPACT_LABEL_CHARS))
        legend = ax.get_legend()
        if legend is None:
            continue
        handles += legend.legend_handles
        labels += [text.get_text() for text in legend.get_texts()]
        legend.remove()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=2)


def _bytes(figure: Any, fmt: str) -> bytes:
    out = io.BytesIO()
    # No creation date, no software version: the same data gives the same bytes.
    metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    figure.savefig(out, format=fmt, dpi=_PNG_DPI, metadata=metadata)
    return out.getvalue()


def no_data(axes: list[Any], title: str) -> None:
    """An empty chart that says so, instead of empty axes (or a crash): the title over the
    first axes, every axes hidden, the words in the middle of the figure."""
    axes[0].set_title(title, loc="left")
    for ax in axes:
        ax.set_axis_off()
    axes[0].figure.text(0.5, 0.5, "no data in this window", ha="center", va="center",
                        fontsize=14, color="#666666", gid="no-data")


def parse_day(value: Any) -> Any:
    """A ``datetime.date`` from an ISO date (or the date itself)."""
    if isinstance(value, datetime.date):
        return value
    return datetime.date.fromisoformat(str(value)[:10])


def parse_instant(value: Any) -> Any:
    """A ``datetime.datetime`` from ISO 8601 text (or the datetime itself)."""
    if isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value))
