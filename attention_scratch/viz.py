"""Helpers for the book: show library source, draw attention heatmaps.

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
