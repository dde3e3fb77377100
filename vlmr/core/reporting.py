"""Numbers and figures in reports: one way to format a value, one way to save a plot.

    fmt(0.91234)                 # "0.912"; None, NaN and inf are "n/a" (see vlmr.core.metrics)
    fmt_ci({"mean": 0.5, "lo": 0.4, "hi": 0.6})   # "0.50 [0.40, 0.60]"
    plt = pyplot()               # matplotlib with the Agg backend (no display needed)
    save_figure(fig, "runs/x/curve.png")          # atomic, and byte-stable for the same data
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from vlmr.core.files import atomic_write_bytes


def fmt(x, digits: int = 3) -> str:
    """A number for a table; undefined values (None, NaN, inf) are "n/a"."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def fmt_ci(stat: dict | None, digits: int = 2) -> str:
    """{"mean", "lo", "hi"} -> "mean [lo, hi]"; the interval is left out when it is undefined."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    lo, hi = stat.get("lo"), stat.get("hi")
    ci = f" [{fmt(lo, digits)}, {fmt(hi, digits)}]" if lo is not None and hi is not None else ""
    return f"{fmt(stat['mean'], digits)}{ci}"


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use (matplotlib is in the `train` extra)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write fig as PNG atomically and close it; no timestamp or software tag, so same data gives same bytes."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())
