"""The report's figures as PNG bytes (matplotlib, Agg, no pyplot global state).

Each function returns ``None`` when it has nothing to draw, so the caller can leave the plot out with a note.
Figures are built on ``matplotlib.figure.Figure`` directly: no GUI backend, no global figure registry, safe
to call repeatedly in one process.
"""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np

from .collect import Curve

R2REC_COLOR, OTHER_COLOR, BASE_COLOR = "#d1495b", "#4c78a8", "#9d9d9d"


def _figure(w: float = 7.0, h: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    return fig, fig.subplots()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def hr1_plot(results: Sequence[Mapping], chance: float, title: str) -> bytes | None:
    """HR@1 per method with its bootstrap 95% CI as error bars, and the chance level as a line."""
    rows = [r for r in results if r.get("hr1") is not None]
    if not rows:
        return None
    fig, ax = _figure(max(5.0, 1.0 + 0.8 * len(rows)), 3.8)
    x = np.arange(len(rows))
    y = np.array([r["hr1"] for r in rows], dtype=float)
    lo = np.array([(r.get("hr1_ci95") or [None, None])[0] for r in rows], dtype=float)
    hi = np.array([(r.get("hr1_ci95") or [None, None])[1] for r in rows], dtype=float)
    # A missing CI bound draws no bar on that side rather than a wrong one.
    err = np.vstack([np.nan_to_num(y - lo, nan=0.0), np.nan_to_num(hi - y, nan=0.0)]).clip(min=0)
    colors = [
        R2REC_COLOR if r["method"] == "rl" else BASE_COLOR if r["method"] == "base" else OTHER_COLOR for r in rows
    ]
    ax.bar(x, y, color=colors, width=0.6)
    ax.errorbar(x, y, yerr=err, fmt="none", ecolor="black", capsize=4, linewidth=1)
    ax.axhline(chance, color="black", linestyle="--", linewidth=1, label=f"chance = 1/{round(1 / chance)}")
    ax.set_xticks(x, [str(r["method"]) for r in rows], rotation=20, ha="right")
    ax.set_ylabel("HR@1 (95% CI)")
    ax.set_ylim(0, max(float(np.nanmax(np.r_[y, hi])) * 1.15, chance * 1.5))
    ax.set_title(title)
    ax.legend(loc="upper left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _smooth(v: np.ndarray) -> np.ndarray | None:
    """Centred moving average over ~5% of the points; ``None`` when the series is too short to need it."""
    if len(v) < 20:
        return None
    w = max(3, len(v) // 20)
    kernel = np.ones(w) / w
    pad = np.pad(v, (w // 2, w - 1 - w // 2), mode="edge")
    return np.convolve(pad, kernel, mode="valid")


def curve_plot(curves: Sequence[Curve], title: str, ylabel: str) -> bytes | None:
    """Series against training step; noisy long series get a moving average drawn over the raw points."""
    curves = [c for c in curves if c.steps]
    if not curves:
        return None
    fig, ax = _figure()
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        s, v = np.asarray(c.steps), np.asarray(c.values)
        smooth = _smooth(v)
        if smooth is None:
            ax.plot(s, v, marker="o" if len(s) < 30 else None, markersize=3, color=color, label=c.label)
        else:
            ax.plot(s, v, color=color, alpha=0.3, linewidth=0.8)
            ax.plot(s, smooth, color=color, label=f"{c.label} (moving avg.)")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    return _png(fig)


def faithfulness_hist(values_by_method: Mapping[str, Sequence[float]], title: str) -> bytes | None:
    """Distribution of per-prediction faithfulness (share of cited interactions that exist), per method."""
    series = {m: np.asarray(v, dtype=float) for m, v in values_by_method.items() if len(v)}
    if not series:
        return None
    fig, ax = _figure()
    bins = np.linspace(0.0, 1.0, 11)
    for i, (m, v) in enumerate(series.items()):
        ax.hist(
            np.clip(v, 0.0, 1.0),
            bins=bins,
            histtype="step",
            linewidth=2,
            color=f"C{i % 10}",
            weights=np.full(len(v), 1.0 / len(v)),
            label=f"{m} (n={len(v)}, mean {v.mean():.2f})",
        )
    ax.set_xlabel("faithfulness (share of cited interactions that exist)")
    ax.set_ylabel("share of predictions")
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    return _png(fig)
