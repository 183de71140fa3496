"""Draw the package's layout from its real import graph: ``docs/figures/package_layout.png``.

    python docs/layout_figure.py [OUTPUT.png]

Each box is a role of :mod:`attention_scratch.course.layout` (concepts, contract, backends,
training, benchmarks, course tooling) with the modules it holds; each arrow says that modules
of one role import modules of another, labelled with the number of such imports. The graph
is read from the source by :func:`attention_scratch.course.layout.import_graph` (nothing is
imported), so rerunning this script after a change redraws the picture as the code is.
An arrow that points up the page goes against the layering and is drawn dashed in red.
"""
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from attention_scratch.course.layout import import_graph, role_graph

OUTPUT = Path(__file__).parent / "figures" / "package_layout.png"

# (left, bottom, width, height) of each role's box, in axes units; higher = imports more.
BOXES = {
    "training": (0.00, 0.78, 0.17, 0.20),
    "demos": (0.20, 0.78, 0.14, 0.20),
    "course tooling": (0.37, 0.78, 0.35, 0.20),
    "benchmarks": (0.75, 0.78, 0.25, 0.20),
    "concepts (one per chapter)": (0.00, 0.46, 0.72, 0.26),
    "backend dispatch": (0.40, 0.34, 0.47, 0.08),
    "backends: Numba": (0.40, 0.12, 0.25, 0.17),
    "backends: CUDA": (0.70, 0.12, 0.30, 0.17),
    "contract": (0.00, 0.00, 1.00, 0.08),
}
# Arrows that would cross a box, drawn by hand: (x, y) from and to.
ROUTES = {
    ("concepts (one per chapter)", "contract"): ((0.2, 0.46), (0.2, 0.08)),
    ("benchmarks", "concepts (one per chapter)"): ((0.77, 0.78), (0.70, 0.72)),
    ("concepts (one per chapter)", "benchmarks"): ((0.72, 0.62), (0.84, 0.78)),
    ("benchmarks", "backend dispatch"): ((0.85, 0.78), (0.85, 0.42)),
    ("benchmarks", "backends: CUDA"): ((0.96, 0.78), (0.96, 0.29)),
    ("backend dispatch", "contract"): ((0.675, 0.34), (0.675, 0.08)),
}
TITLES = {"backends: Numba": "Numba backend", "backends: CUDA": "CUDA backend"}
FILL = {"concepts (one per chapter)": "#e8f1fb", "contract": "#fdf1dc"}
LEVEL = {"training": 4, "demos": 4, "course tooling": 4, "benchmarks": 4,
         "concepts (one per chapter)": 3, "backend dispatch": 2, "backends: Numba": 1,
         "backends: CUDA": 1, "contract": 0}


def short(name):
    """``attention_scratch.backends.cuda.gpu`` -> ``gpu``; the package itself -> ``__init__``."""
    parts = name.split(".")
    return "__init__" if len(parts) == 1 else parts[-1]


def anchor_x(src, dst):
    """An x where the two boxes overlap horizontally (the arrow then runs straight), else the
    centres."""
    (x0, _, w0, _), (x1, _, w1, _) = BOXES[src], BOXES[dst]
    lo, hi = max(x0, x1), min(x0 + w0, x1 + w1)
    if lo < hi:
        return (lo + hi) / 2, (lo + hi) / 2
    return x0 + w0 / 2, x1 + w1 / 2


def draw(output=OUTPUT):
    roles, edges = role_graph(import_graph())
    fig = plt.figure(figsize=(8, 6.6))
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.axis("off")
    for role, (x, y, w, h) in BOXES.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.004,rounding_size=0.01",
                                    facecolor=FILL.get(role, "#f2f2f2"), edgecolor="#555555"))
        modules = sorted(short(m) for m in roles.get(role, []))
        title = f"{TITLES.get(role, role)}  ({len(modules)})"
        ax.text(x + 0.01, y + h - 0.014, title, va="top", fontsize=12, fontweight="bold")
        width = max(14, int((w - 0.02) * 90))  # characters per line, 10 pt on an 8 in figure
        body = "\n".join(textwrap.wrap(", ".join(modules), width))
        ax.text(x + 0.01, y + h - 0.052, body, va="top", fontsize=10, family="monospace",
                linespacing=1.25)
    for (src, dst), count in sorted(edges.items()):
        xs, xd = anchor_x(src, dst)
        up = LEVEL[dst] > LEVEL[src]
        ys = BOXES[src][1] + (BOXES[src][3] if up else 0)
        yd = BOXES[dst][1] + (0 if up else BOXES[dst][3])
        (xs, ys), (xd, yd) = ROUTES.get((src, dst), ((xs, ys), (xd, yd)))
        style = {"color": "#c0392b", "linestyle": "--"} if up else {"color": "#333333"}
        ax.add_patch(FancyArrowPatch((xs, ys), (xd, yd), arrowstyle="-|>", mutation_scale=14,
                                     linewidth=1.3, shrinkA=2, shrinkB=2, **style))
        ax.text((xs + xd) / 2 + 0.008, (ys + yd) / 2, str(count), fontsize=10, va="center",
                color=style["color"], bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    return output


if __name__ == "__main__":
    print(draw(sys.argv[1] if len(sys.argv) > 1 else OUTPUT))
