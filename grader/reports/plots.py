"""Small PNG charts, as data URIs, drawn from the plain data in a check's details.

Each function takes what results.py documents for one details key and returns
"data:image/png;base64,..." or None when the data cannot be drawn. The numbers
come from student code, so they may be NaN, inf, astronomically large, empty
or not numbers at all: a chart that cannot be drawn is left out of the page,
never an error that stops the page.

Figures are made with the object-oriented API and an Agg canvas of their own:
no pyplot, so no global figure registry to leak into and nothing to close, and
no GUI backend is ever selected in the grader's process.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.image import imsave
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from matplotlib.axis import Axis
    from matplotlib.colors import Colormap, Normalize

log = logging.getLogger(__name__)

DPI = 100  # small files: a page with a dozen charts stays well under a megabyte
MAX_POINTS = 5_000  # more points than this add bytes, not information
MAX_LABEL = 60
LARGEST = 1e300  # beyond this matplotlib's own arithmetic overflows
COLOURS = ("#0969da", "#bc4c00", "#1a7f37", "#8250df")
DATA_COLOUR = "#6e7781"
MAX_THUMBNAIL_SIDE = 256
MAX_CLASSES = 50


def _never_raises(draw: Callable[..., str | None]) -> Callable[..., str | None]:
    """Turn any failure while drawing into "no chart": odd data must not break a report."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> str | None:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # matplotlib's complaints about odd data are not news here
                return draw(*args, **kwargs)
        except Exception:  # see the docstring
            log.warning("could not draw %s", draw.__name__, exc_info=True)
            return None

    return wrapper


# --------------------------------------------------------------------------
# Reading untrusted data


def numbers(values: Any) -> np.ndarray | None:
    """A 1-D float array (non-finite and absurd values as NaN), or None if unusable or all NaN."""
    if not isinstance(values, (list, tuple)) or not values:
        return None
    if any(isinstance(v, (str, bool)) or v is None for v in values):
        return None
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if array.ndim != 1:
        return None
    array = np.where(np.isfinite(array) & (np.abs(array) < LARGEST), array, np.nan)
    return None if np.all(np.isnan(array)) else array


def _pair(xs: Any, ys: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Two equally long number lists, thinned evenly to MAX_POINTS, or None."""
    x, y = numbers(xs), numbers(ys)
    if x is None or y is None or len(x) != len(y):
        return None
    if len(x) > MAX_POINTS:
        keep = np.linspace(0, len(x) - 1, MAX_POINTS).astype(int)
        x, y = x[keep], y[keep]
    return x, y


def _label(value: Any, default: str = "", *, limit: int = MAX_LABEL) -> str:
    text = value if isinstance(value, str) and value.strip() else default
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _range(*arrays: np.ndarray) -> tuple[float, float]:
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays])
    return float(finite.min()), float(finite.max())


# --------------------------------------------------------------------------
# Figures


# Margins in inches for a chart whose labels have a known size: one axis, short axis labels, numeric ticks
# (matplotlib switches to an offset or scientific notation before they grow long), the legend inside.
# The constrained layout that fits any other chart measures every label in an extra drawing pass: 40 %
# of a curve chart's time, drawn twice for every gradient-descent submission.
PLAIN_MARGINS = (0.72, 0.5, 0.15, 0.28)  # left, bottom, right, top (room for an offset such as "1e10")
# The per-epoch charts side by side are such charts too, without an axis label on the left (the title names
# the series) and with a title above: each one's left margin is also the gap to the one before it.
SERIES_MARGINS = (0.55, 0.45, 0.12, 0.32)


def _figure(width: float, height: float, *, margins: tuple[float, float, float, float] | None = None,
            columns: int = 1) -> Figure:
    """A figure whose layout is fitted to its labels, or fixed by `margins` (inches), for `columns` axes in a
    row that many inches apart as the left margin."""
    figure = Figure(figsize=(width, height), layout=None if margins else "constrained")
    if margins:
        left, bottom, right, top = margins
        axes_width = (width - right - left * columns) / columns
        figure.subplots_adjust(left=left / width, bottom=bottom / height, right=1 - right / width,
                               top=1 - top / height, wspace=left / axes_width)
    FigureCanvasAgg(figure)
    return figure


def _data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return _png_uri(buffer.getvalue())


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _integer_ticks(axis: Axis) -> None:
    """Ticks at whole numbers only: a linear axis's locator is a MaxNLocator (an AutoLocator)."""
    locator = axis.get_major_locator()
    if isinstance(locator, MaxNLocator):
        locator.set_params(integer=True)


def _few_ticks(axis: Axis) -> None:
    """At most about five ticks on a linear axis: enough for a chart this small, and each tick's label is
    measured and drawn (a third of a curve chart's time went to the ten or so of matplotlib's default)."""
    locator = axis.get_major_locator()
    if isinstance(locator, MaxNLocator):
        locator.set_params(nbins=5)


def _style(axes, *, title: str = "", x_label: str = "", y_label: str = "") -> None:
    # parse_math=False: labels may carry student text, and "$...$" would be parsed as TeX
    if title:
        axes.set_title(title, fontsize=10, parse_math=False)
    axes.set_xlabel(x_label, fontsize=9, parse_math=False)
    axes.set_ylabel(y_label, fontsize=9, parse_math=False)
    axes.tick_params(labelsize=8)
    for axis in (axes.xaxis, axes.yaxis):
        _few_ticks(axis)
    axes.grid(True, color="#d0d7de", linewidth=0.6)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


def _legend(axes) -> None:
    legend = axes.legend(fontsize=8, frameon=False)
    for text in legend.get_texts():
        text.set_parse_math(False)


# --------------------------------------------------------------------------
# One chart per details key


@_never_raises
def series_chart(series: Any, axis: Any = None) -> str | None:
    """details["series"]: one small line chart per named per-epoch series, side by side; with
    details["series_x"] (`axis`), all of them on one chart against its x values."""
    if not isinstance(series, dict):
        return None
    usable = [(str(name), array) for name, values in series.items()
              if (array := numbers(values)) is not None][:4]
    if not usable:
        return None
    if isinstance(axis, dict):
        return _series_against(usable, axis)
    figure = _figure(3.2 * len(usable), 2.4, margins=SERIES_MARGINS, columns=len(usable))
    for i, (name, values) in enumerate(usable):
        axes = figure.add_subplot(1, len(usable), i + 1)
        epochs = np.arange(1, len(values) + 1)
        axes.plot(epochs, values, color=COLOURS[i % len(COLOURS)], marker="o" if len(values) <= 30 else None,
                  markersize=3, linewidth=1.5)
        _style(axes, title=_label(name.replace("_", " ")), x_label="epoch")
        _integer_ticks(axes.xaxis)
    return _data_uri(figure)


def _series_against(usable: list[tuple[str, np.ndarray]], axis: dict) -> str | None:
    """Several series against shared x values (details["series_x"]), with an optional marked x."""
    x = numbers(axis.get("values"))
    lines = [(name, values) for name, values in usable if x is not None and len(values) == len(x)]
    if x is None or not lines:
        return None
    figure = _figure(4.6, 3.0)
    axes = figure.add_subplot()
    for i, (name, values) in enumerate(lines):
        axes.plot(x, values, color=COLOURS[i % len(COLOURS)], marker="o" if len(values) <= 30 else None,
                  markersize=3, linewidth=1.5, linestyle="--" if "(grader)" in name else "-",
                  label=_label(name.replace("_", " "), limit=40))
    finite = np.concatenate([v[np.isfinite(v)] for _, v in lines])
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        axes.set_yscale("log")
    mark = axis.get("mark")
    if isinstance(mark, (int, float)) and not isinstance(mark, bool) and math.isfinite(mark):
        axes.axvline(mark, color=DATA_COLOUR, linewidth=1, linestyle=":",
                     label=_label(axis.get("mark_label"), "chosen", limit=40))
    _style(axes, x_label=_label(axis.get("label"), "x"))
    if np.allclose(x, np.round(x)):
        _integer_ticks(axes.xaxis)
    _legend(axes)
    return _data_uri(figure)


@_never_raises
def confusion_matrix_chart(data: Any) -> str | None:
    """details["confusion_matrix"]: counts, rows the true class, columns the predicted one."""
    if not isinstance(data, dict):
        return None
    labels, rows = data.get("labels"), data.get("matrix")
    if not isinstance(labels, list) or not isinstance(rows, list) or not 0 < len(labels) <= MAX_CLASSES:
        return None
    if len(rows) != len(labels) or not all(isinstance(r, list) and len(r) == len(labels) for r in rows):
        return None
    matrix = [m for m in (numbers(r) for r in rows) if m is not None]
    if len(matrix) != len(rows):
        return None
    counts = np.nan_to_num(np.vstack(matrix))
    n = len(labels)
    names = [_label(str(label))[:16] for label in labels]
    # labels side by side under the columns overlap as soon as they are longer than a column is wide
    # ("0 - zero" on MNIST): upright, each keeps to its own column
    upright = n > 10 or max(len(name) for name in names) * n > 40
    side = min(4.6, 1.6 + 0.3 * n)
    figure = _figure(side + 0.6, side, margins=_matrix_margins(names, upright=upright))
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, fraction=0.05, pad=0.04).ax.tick_params(labelsize=7)
    axes.set_xticks(range(n), names, fontsize=8, rotation=90 if upright else 0, parse_math=False)
    axes.set_yticks(range(n), names, fontsize=8, parse_math=False)
    axes.set_xlabel("predicted", fontsize=9)
    axes.set_ylabel("true", fontsize=9)
    if n <= 12:
        _annotate_counts(axes, counts)
    return _data_uri(figure)


# Room beside a matrix's class names: the ticks and their pad, the axis label ("true", "predicted") and its
# pad, a little air; on the right, the colour bar's numbers (at most six digits at 7 points).
MATRIX_LABEL_ROOM = 0.32
MATRIX_RIGHT = 0.42
MATRIX_TOP = 0.1


def _matrix_margins(names: list[str], *, upright: bool) -> tuple[float, float, float, float]:
    """Margins (inches) that fit the class names, measured as they will be drawn (8 points): a constrained
    layout measures every label by drawing the whole chart once more, half of its time."""
    widest = max(_text_inches(name, 8)[0] for name in names)
    height = _text_inches("Ag", 8)[1]
    return (widest + MATRIX_LABEL_ROOM, (widest if upright else height) + MATRIX_LABEL_ROOM, MATRIX_RIGHT,
            MATRIX_TOP)


@functools.lru_cache(maxsize=4096)  # a course's class names, over and over in a batch
def _text_inches(text: str, points: float) -> tuple[float, float]:
    """Width and height of one line of text in the charts' font, in inches."""
    width, height, _ = _MEASURE.get_text_width_height_descent(text, FontProperties(size=points), ismath=False)
    return width / _MEASURE.dpi, height / _MEASURE.dpi


_MEASURE = RendererAgg(1, 1, 72)  # a renderer only for measuring text: at 72 dpi, a point is a pixel


def _annotate_counts(axes, counts: np.ndarray) -> None:
    threshold = counts.max() / 2 if counts.size else 0
    for (row, column), value in np.ndenumerate(counts):
        text = f"{value:.0f}" if float(value).is_integer() else f"{value:.2g}"
        axes.text(column, row, text, ha="center", va="center", fontsize=7,
                  color="white" if value > threshold else "#24292f")


@_never_raises
def thumbnail(image: Any) -> str | None:
    """One image of details["misclassified"] (H x W grey levels 0..255) as a tiny PNG."""
    if not isinstance(image, list) or not image or not all(isinstance(row, list) for row in image):
        return None
    try:
        pixels = np.asarray(image, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim != 2 or not all(0 < side <= MAX_THUMBNAIL_SIDE for side in pixels.shape):
        return None
    pixels = np.clip(np.nan_to_num(pixels, nan=0.0, posinf=255.0, neginf=0.0), 0, 255)
    buffer = io.BytesIO()
    imsave(buffer, pixels, cmap="gray_r", vmin=0, vmax=255, format="png")
    return _png_uri(buffer.getvalue())


@_never_raises
def scatter_chart(data: Any) -> str | None:
    """details["scatter"]: predicted against actual, with y = x when data["diagonal"] is true."""
    if not isinstance(data, dict):
        return None
    pair = _pair(data.get("x"), data.get("y"))
    if pair is None:
        return None
    x, y = pair
    figure = _figure(3.6, 3.4)
    axes = figure.add_subplot()
    axes.scatter(x, y, s=6, alpha=0.5, color=COLOURS[0], linewidths=0)
    if data.get("diagonal") is True:
        low, high = _range(x, y)
        axes.plot([low, high], [low, high], color=COLOURS[1], linewidth=1.2, label="y = x (perfect)")
        _legend(axes)
    _style(axes, x_label=_label(data.get("x_label"), "actual"), y_label=_label(data.get("y_label"), "predicted"))
    return _data_uri(figure)


@_never_raises
def curve_chart(data: Any) -> str | None:
    """details["curve"]: the data points and the student's fitted line or curve over them."""
    if not isinstance(data, dict):
        return None
    points = _pair(data.get("data_x"), data.get("data_y"))
    fit = _pair(data.get("fit_x"), data.get("fit_y"))
    if points is None and fit is None:
        return None
    figure = _figure(4.6, 3.0, margins=PLAIN_MARGINS)
    axes = figure.add_subplot()
    if points is not None:
        axes.scatter(*points, s=7, color=DATA_COLOUR, alpha=0.6, linewidths=0, label="data")
    if fit is not None:
        order = np.argsort(fit[0], kind="stable")
        axes.plot(fit[0][order], fit[1][order], color=COLOURS[1], linewidth=2,
                  label=_label(data.get("label"), "your fit", limit=40))
    if points is not None and fit is not None:
        _keep_data_in_view(axes, points[1], fit[1])
    _style(axes, x_label="x", y_label="y")
    _legend(axes)
    return _data_uri(figure)


def _keep_data_in_view(axes, data_y: np.ndarray, fit_y: np.ndarray) -> None:
    """A diverged fit (values like 1e52) would flatten the data to a line: frame the data instead."""
    low, high = _range(data_y)
    span = (high - low) or 1.0
    fit_low, fit_high = _range(fit_y)
    if fit_low < low - 2 * span or fit_high > high + 2 * span:
        axes.set_ylim(low - 0.5 * span, high + 0.5 * span)
        axes.text(0.02, 0.02, "the fit leaves this view", transform=axes.transAxes, fontsize=8,
                  color=COLOURS[1], va="bottom")


@_never_raises
def field_chart(data: Any) -> str | None:
    """details["field"]: a model's estimate over a grid of the plane, the data points on top in the same
    colours: class regions when data["classes"] names them, else a colour scale (data["range"] when given)."""
    if not isinstance(data, dict):
        return None
    x, y = numbers(data.get("x")), numbers(data.get("y"))
    rows = data.get("values")
    if x is None or y is None or not isinstance(rows, list) or len(rows) != len(y) or len(x) * len(y) > 250_000:
        return None
    values = _grid(rows, len(x))
    if values is None:
        return None
    points = data.get("points")
    points = points if isinstance(points, dict) else {}
    scattered = _pair(points.get("x"), points.get("y"))
    targets = numbers(points.get("value"))
    classes = data.get("classes")
    classes = [_label(str(c), limit=30) for c in classes][:MAX_CLASSES] if isinstance(classes, list) else []
    figure = _figure(4.8 if classes else 4.4, 3.6)
    axes = figure.add_subplot()
    extent = (float(x[0]), float(x[-1]), float(y[0]), float(y[-1]))
    cmap: Colormap | str
    norm: Normalize
    if classes:
        from matplotlib.colors import BoundaryNorm, ListedColormap

        palette = [COLOURS[i % len(COLOURS)] for i in range(len(classes))]
        cmap, norm = ListedColormap(palette), BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes))
    else:
        from matplotlib.colors import Normalize

        cmap = "RdBu_r"
        low, high = _field_range(data.get("range"), values, targets)
        norm = Normalize(low, high)
    image = axes.imshow(values, origin="lower", extent=extent, aspect="auto", cmap=cmap, norm=norm,
                        alpha=0.4 if classes else 0.6, interpolation="nearest")
    if scattered is not None and targets is not None and len(targets) == len(points.get("x", [])):
        keep = np.linspace(0, len(targets) - 1, len(scattered[0])).astype(int)
        axes.scatter(*scattered, c=targets[keep], cmap=cmap, norm=norm, s=16, edgecolors="#24292f",
                     linewidths=0.5)
    if classes:
        from matplotlib.patches import Patch

        legend = axes.legend(handles=[Patch(color=palette[i], label=name) for i, name in enumerate(classes)],
                             fontsize=7, frameon=True, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        for text in legend.get_texts():
            text.set_parse_math(False)
    else:
        bar = figure.colorbar(image, ax=axes, shrink=0.85)
        bar.ax.tick_params(labelsize=7)
        bar.set_label(_label(data.get("label"), "estimate"), fontsize=8)
    _style(axes, title=_label(data.get("title")), x_label="x1", y_label="x2")
    axes.grid(False)
    return _data_uri(figure)


def _grid(rows: list, width: int) -> np.ndarray | None:
    """Rows of numbers (None, non-finite and absurd values as NaN: a diverged model) as a 2-D array, or None."""
    if not all(isinstance(row, list) and len(row) == width for row in rows):
        return None
    if any(isinstance(v, (str, bool)) or not (v is None or isinstance(v, (int, float))) for row in rows for v in row):
        return None
    values = np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
    return np.where(np.isfinite(values) & (np.abs(values) < LARGEST), values, np.nan)


def _field_range(given: Any, values: np.ndarray, targets: np.ndarray | None) -> tuple[float, float]:
    """The colour scale: the given range, else one that holds the data's targets and most of the estimate."""
    span = numbers(given)
    if span is not None and len(span) == 2 and np.all(np.isfinite(span)) and span[0] < span[1]:
        return float(span[0]), float(span[1])
    arrays = [a[np.isfinite(a)] for a in (values.reshape(-1), targets) if a is not None]
    reference = arrays[-1] if arrays and arrays[-1].size else np.concatenate(arrays)
    low, high = (float(reference.min()), float(reference.max())) if reference.size else (0.0, 1.0)
    return (low, high) if low < high else (low - 1.0, high + 1.0)


# --------------------------------------------------------------------------
# Class summary


@_never_raises
def score_histogram(scores: Sequence[float], *, max_score: float, unit: str = "points") -> str | None:
    """How many submissions scored how much, from 0 to max_score."""
    values = numbers(list(scores))
    if values is None or not math.isfinite(max_score) or max_score <= 0:
        return None
    values = np.clip(values[np.isfinite(values)], 0, max_score)
    bins = np.arange(0, max_score + 1) if max_score <= 30 and float(max_score).is_integer() \
        else np.linspace(0, max_score, 21)
    figure = _figure(5.0, 2.4)
    axes = figure.add_subplot()
    axes.hist(values, bins=bins, color=COLOURS[0], edgecolor="white")  # type: ignore[arg-type]  # stubs omit arrays
    _style(axes, x_label=f"score ({unit})", y_label="submissions")
    _integer_ticks(axes.yaxis)
    axes.set_xlim(0, max_score)
    return _data_uri(figure)


@_never_raises
def pass_rate_chart(rates: Sequence[tuple[str, float]]) -> str | None:
    """Horizontal bars of the fraction (0..1) of submissions passing each check, in the given order."""
    if not rates:
        return None
    names = [_label(name, "?", limit=32) for name, _ in rates]
    values = np.array([100.0 * rate for _, rate in rates], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        return None
    figure = _figure(5.0, 0.9 + 0.3 * len(rates))
    axes = figure.add_subplot()
    positions = np.arange(len(rates))
    axes.barh(positions, values, color=COLOURS[0], height=0.6)
    axes.set_yticks(positions, names, fontsize=9, parse_math=False)
    axes.invert_yaxis()  # first in the list on top, as in the table beside it
    for position, value in zip(positions, values, strict=True):
        inside = value > 85  # a full bar has no room after it: write on the bar
        axes.text(value - 1.5 if inside else value + 1.5, float(position), f"{value:.0f}%", va="center", fontsize=8,
                  ha="right" if inside else "left", color="white" if inside else "#24292f")
    _style(axes, x_label="submissions passing (%)")
    axes.set_xlim(0, 100)
    axes.grid(False, axis="y")
    return _data_uri(figure)
