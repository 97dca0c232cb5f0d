"""The overview picture's furniture: orientation letters, scale bars, and a layout in inches
that gives every image panel the same square, sizes the legend column to what it holds and
keeps every text inside the figure (measured with the figure's renderer, not guessed).

Kept apart from :mod:`oncoseg.overview` (what is shown) because none of it knows a prediction:
it places and measures matplotlib artists.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from oncoseg.orientation import MAX_UNRESLICED_TILT_DEGREES

PANEL_INCHES = 3.2  # every image panel is a square this size
MARGIN = 0.12  # inches around the figure's contents
GAP = 0.14  # between panels
PANEL_TITLE = 0.3  # room above a panel for its title
SIDE_MIN = 1.7  # the legend column's least width
TITLE_SIZE = 11.0
# A direction's second letter is shown when it leans towards that axis by more than an
# oblique volume may before it is resliced (oncoseg.orientation): the same idea of "tilted".
SECOND_LETTER = float(np.sin(np.radians(MAX_UNRESLICED_TILT_DEGREES)))
LETTER_COLOUR = "#ffd24a"
SCALE_GID, LETTER_GID = "scale-bar", "orientation-"
# Lengths a scale bar may have (mm): the largest that is at most a quarter of the field.
_BAR_MM = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)


def wrapped(text: str, width: int) -> str:
    """``text`` in lines of at most ``width`` characters, broken between words where it can
    be (a path or an identifier longer than a line is broken inside)."""
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def direction_letters(vector: Sequence[float]) -> str:
    """Where a direction (LPS) points, as a viewer writes it: 'L', 'A', 'S' ..., with a second
    (and third) letter for an oblique direction, the nearest body axis first ('LA': mostly
    left, somewhat anterior)."""
    vector = np.asarray(vector, float)
    vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
    letters = []
    for axis in np.argsort(-np.abs(vector), kind="stable"):
        if letters and abs(vector[axis]) <= SECOND_LETTER:
            break
        letters.append(("LPS" if vector[axis] > 0 else "RAI")[axis])
    return "".join(letters)


def orientation_letters(ax: Any, right_lps: Sequence[float], down_lps: Sequence[float]
                        ) -> dict[str, str]:
    """Letters at the four edges of an image panel for the directions to the viewer's right
    and down (LPS); the texts carry gids ``orientation-left`` etc. Returns side -> letters."""
    import matplotlib.patheffects as effects

    right, down = np.asarray(right_lps, float), np.asarray(down_lps, float)
    letters = {"left": direction_letters(-right), "right": direction_letters(right),
               "top": direction_letters(-down), "bottom": direction_letters(down)}
    places = {"left": (0.015, 0.5, "left", "center"), "right": (0.985, 0.5, "right", "center"),
              "top": (0.5, 0.985, "center", "top"), "bottom": (0.5, 0.015, "center", "bottom")}
    for side, text in letters.items():
        x, y, ha, va = places[side]
        ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=10,
                fontweight="bold", color=LETTER_COLOUR, gid=LETTER_GID + side,
                path_effects=[effects.withStroke(linewidth=2.5, foreground="black")])
    return letters


def scale_bar_mm(field_mm: float) -> float:
    """The longest round length (mm) that is at most a quarter of the field shown."""
    fitting = [length for length in _BAR_MM if length <= field_mm / 4]
    return float(fitting[-1] if fitting else _BAR_MM[0])


def add_scale_bar(ax: Any, field_mm: float) -> Any:
    """A white bar of :func:`scale_bar_mm` in the panel's lower right corner (the panel's data
    units are millimetres), labelled 'N mm', with the gid ``scale-bar``."""
    import matplotlib.patheffects as effects
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = scale_bar_mm(field_mm)
    bar = AnchoredSizeBar(ax.transData, length, f"{length:g} mm", loc="lower right",
                          pad=0.4, borderpad=0.3, sep=3, color="white", frameon=False,
                          size_vertical=field_mm / 180, fontproperties=FontProperties(size=7.5))
    bar.txt_label._text.set_path_effects(
        [effects.withStroke(linewidth=2, foreground="black")])
    bar.set_gid(SCALE_GID)
    ax.add_artist(bar)
    return bar


def _renderer(figure: Any) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(figure.canvas, FigureCanvasAgg):
        FigureCanvasAgg(figure)
    return figure.canvas.get_renderer()


def _inches(artist: Any, figure: Any) -> tuple[float, float]:
    box = artist.get_window_extent(_renderer(figure))
    return box.width / figure.dpi, box.height / figure.dpi


def arrange(figure: Any, panels: Sequence[Any], side: Any, legend: Any | None,
            colorbar: Any | None, title: str, plot_axes: Sequence[Any] = ()) -> None:
    """Place ``panels`` as equal squares in one row under a wrapped ``title``, then a column
    (``side``) as wide as its legend needs with the colour bar at its foot. An axes in
    ``plot_axes`` (a curve, a bar chart) is inset in its square, leaving room for its tick
    labels inside the square."""
    count = len(panels)
    side_width = SIDE_MIN
    legend_height = 0.0
    for artist in [legend, *side.texts]:
        if artist is not None:
            width, height = _inches(artist, figure)
            side_width = max(side_width, width + 0.2)
            legend_height = max(legend_height, height)
    colorbar_room = 0.7 if colorbar is not None else 0.0
    width = 2 * MARGIN + count * PANEL_INCHES + count * GAP + side_width
    characters = max(20, int(width * 72 / (0.55 * TITLE_SIZE)))
    heading = figure.suptitle(wrapped(title, characters), fontsize=TITLE_SIZE, y=1.0, va="top")
    title_height = _inches(heading, figure)[1] + 0.12
    row_height = max(PANEL_TITLE + PANEL_INCHES, legend_height + colorbar_room + 0.2)
    height = MARGIN + title_height + row_height + MARGIN
    figure.set_size_inches(width, height)
    heading.set_y(1 - 0.06 / height)
    top = height - MARGIN - title_height  # inches from the bottom
    for index, ax in enumerate(panels):
        left = MARGIN + index * (PANEL_INCHES + GAP)
        bottom = top - PANEL_TITLE - PANEL_INCHES
        box = [left, bottom, PANEL_INCHES, PANEL_INCHES]
        if ax in plot_axes:
            box = [left + 0.5, bottom + 0.45, PANEL_INCHES - 0.6, PANEL_INCHES - 0.5]
        ax.set_position(_fraction(box, width, height))
    side_left = MARGIN + count * (PANEL_INCHES + GAP)
    side_box = [side_left, top - row_height, side_width - 0.1, row_height - 0.05]
    side.set_position(_fraction(side_box, width, height))
    if colorbar is not None:
        colorbar.set_position(_fraction([side_left + 0.05, top - row_height + 0.45,
                                         min(side_width - 0.3, 2.2), 0.13], width, height))
        colorbar.tick_params(labelsize=7)
        colorbar.xaxis.label.set_size(8)


def _fraction(box: Sequence[float], width: float, height: float) -> list[float]:
    left, bottom, w, h = box
    return [left / width, bottom / height, w / width, h / height]


def texts_outside(figure: Any) -> list[Any]:
    """The visible, non-empty text artists whose drawn extent leaves the figure."""
    from matplotlib.text import Text

    renderer = _renderer(figure)
    bounds = figure.bbox
    outside = []
    for text in figure.findobj(Text):
        if not text.get_visible() or not text.get_text().strip():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < bounds.x0 - 0.5 or box.y0 < bounds.y0 - 0.5 or \
                box.x1 > bounds.x1 + 0.5 or box.y1 > bounds.y1 + 0.5:
            outside.append(text)
    return outside


def fitted_texts(figure: Any, smallest: float = 5.0) -> None:
    """Shrink any text that leaves the figure until it fits (or reaches ``smallest`` points):
    the layout should leave none, this is the guarantee when a name is longer than foreseen."""
    figure.draw_without_rendering()  # legends and colour bars place their texts when drawn
    for _ in range(12):
        outside = texts_outside(figure)
        if not outside:
            return
        for text in outside:
            text.set_fontsize(max(smallest, text.get_fontsize() * 0.85))
        figure.draw_without_rendering()
