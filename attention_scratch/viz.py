"""Helpers for the book: show library source,
draw attention heatmaps and the tile walks of chapters 9-10.

Matplotlib and IPython are imported inside the functions, so importing the
library stays cheap and works without a display.
"""
import inspect
import re

import numpy as np

_MARK = re.compile(r"^\s*# (BEGIN|END) (EXERCISE|SOLUTION)\b.*$|^\s*# uses: .*$")


def source_text(obj):
    """The source of a library function or class, without the exercise marks."""
    lines = inspect.getsource(obj).splitlines()
    return "\n".join(line for line in lines if not _MARK.match(line)).rstrip() + "\n"


def show_source(*objs):
    """Display the source of library objects as a highlighted Python block (book cells)."""
    from IPython.display import Markdown

    body = "\n\n".join(source_text(obj).rstrip() for obj in objs)
    return Markdown(f"```python\n{body}\n```")


def heatmap(ax, weights, *, x_labels=None, y_labels=None, title=None, cmap="viridis",
            vmin=0.0, vmax=None, colorbar=True, xlabel="key position j", ylabel="query position i"):
    """Draw a (L, S) matrix of attention weights on ``ax``; masked (NaN) cells show blank.

    Returns the image, so callers can share one colour bar between panels.
    """
    weights = np.asarray(weights, dtype=float)
    image = ax.imshow(weights, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    if x_labels is not None:
        ax.set_xticks(range(len(x_labels)), x_labels)
    if y_labels is not None:
        ax.set_yticks(range(len(y_labels)), y_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return image


def tile_sweep(ax, rows, cols, strip, step, *, along="row", title=None):
    """Draw the score matrix as ``rows x cols`` tiles and one strip of tiles being walked.

    ``along="row"`` walks query block ``strip`` across the key blocks (the flash
    forward pass); ``along="col"`` walks key block ``strip`` down the query blocks
    (the flash backward pass). Tiles before ``step`` are done, tile ``step`` is the
    one in fast memory now, the rest of the strip is still to come; every other
    tile is only outlined, since no pass ever stores the whole matrix. Returns legend
    handles and labels for the three states of the strip.
    """
    from matplotlib.patches import FancyArrowPatch, Rectangle

    colours = {"done": "#a8dadc", "now": "#f4a261", "next": "#e9ecef"}
    for i in range(rows):
        for j in range(cols):
            k = j if along == "row" else i
            in_strip = (i if along == "row" else j) == strip
            state = None if not in_strip else "done" if k < step else "now" if k == step else "next"
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=colours.get(state, "white"),
                                   edgecolor="0.3" if in_strip else "0.75",
                                   lw=1.2 if in_strip else 0.6,
                                   linestyle="-" if in_strip else (0, (3, 2))))
    a, b = (strip + 0.5, -0.35), (strip + 0.5, rows + 0.35)  # downward arrow beside the column
    if along == "row":
        a, b = (-0.35, strip + 0.5), (cols + 0.35, strip + 0.5)
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.3, color="0.2",
                                 zorder=3, alpha=0.6))
    ax.set_xlim(-0.5, cols + 0.5)
    ax.set_ylim(rows + 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks([j + 0.5 for j in range(cols)], [f"$K_{j}$" for j in range(cols)])
    ax.set_yticks([i + 0.5 for i in range(rows)], [f"$Q_{i}$" for i in range(rows)])
    ax.tick_params(length=0)
    ax.xaxis.set_ticks_position("top")
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    handles = [Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="0.3") for c in colours.values()]
    return handles, ["done", "in fast memory now", "still to come"]
