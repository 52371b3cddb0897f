"""Gather what a run folder holds for the report, tolerating whatever is missing.

A run is filled by several stages written by different people and possibly still running, so every piece
is optional: results (``results/<method>.json`` + prediction dumps), training logs (any ``*.csv`` under
``checkpoints/<stage>/`` with a ``step`` column), the trace statistics (``thoughts/stats.json``) and examples
(``thoughts/examples.md``), and item titles (``prepared/items.jsonl``). A file that is present but broken is
not skipped silently: it is listed in ``RunData.problems`` and shown in the report.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..eval.metrics import Prediction
from ..eval.results import PREDICTIONS_SUFFIX, load_predictions, load_result


@dataclass
class Curve:
    """One logged series: ``column`` against ``step`` from ``path`` (stage = folder under checkpoints/)."""

    stage: str
    path: Path
    column: str
    steps: list[float]
    values: list[float]

    @property
    def label(self) -> str:
        return f"{self.stage}: {self.column}"


@dataclass
class RunData:
    root: Path
    results: list[dict] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    thoughts_stats: dict | None = None
    examples_path: Path | None = None
    titles: dict[int, str] = field(default_factory=dict)
    prepared_meta: dict = field(default_factory=dict)  # prepared/meta.json (split sizes, subsets)
    problems: list[str] = field(default_factory=list)  # "path: what is wrong", shown in the report
    cache: dict = field(default_factory=dict, repr=False)  # expensive derived objects (the graph checker)
    _predictions: dict[str, dict[int, list[Prediction]] | None] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.root.resolve().name

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    def input_files(self) -> list[Path]:
        """Every file the report read (for the stage manifest)."""
        files = [self.results_dir / f"{r['method']}.json" for r in self.results]
        files += sorted({c.path for c in self.curves})
        for rel in ("thoughts/stats.json", "thoughts/examples.md", "prepared/meta.json"):
            if (self.root / rel).is_file():
                files.append(self.root / rel)
        return files

    def predictions(self, method: str) -> dict[int, list[Prediction]] | None:
        """The prediction dump of ``method`` by seed, or ``None`` (absent or unreadable, the latter noted)."""
        if method not in self._predictions:
            try:
                self._predictions[method] = load_predictions(self.results_dir, method)
            except FileNotFoundError:
                self._predictions[method] = None
            except (ValueError, OSError, EOFError) as e:  # EOFError: a truncated .gz
                self.problems.append(f"{self.results_dir / (method + PREDICTIONS_SUFFIX)}: {e}")
                self._predictions[method] = None
        return self._predictions[method]

    def title(self, item: int | None) -> str:
        if item is None:
            return "(no valid answer)"
        return self.titles.get(int(item), f"item #{item}")


# -- pieces ------------------------------------------------------------------------------------------------


def _load_results(run: RunData) -> None:
    if not run.results_dir.is_dir():
        return
    for path in sorted(run.results_dir.glob("*.json")):
        if path.name.endswith(".tmp"):
            continue
        try:
            run.results.append(load_result(path))
        except (ValueError, OSError) as e:
            run.problems.append(str(e) if str(path) in str(e) else f"{path}: {e}")


def _num(x: str | None) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def read_curves(path: Path, stage: str) -> list[Curve]:
    """Every numeric column of a CSV log against its ``step`` column.

    Tolerant by design: blank cells (a row that logs eval metrics but no loss) are skipped per column, and a
    step logged twice (a resumed run re-logging) keeps its last value. A CSV without a ``step`` column is
    not a training log and yields nothing.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "step" not in [c.strip() for c in reader.fieldnames]:
            return []
        series: dict[str, dict[float, float]] = {}
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            step = _num(row.get("step"))
            if step is None:
                continue
            for col, raw in row.items():
                if col in ("step", "") or raw is None:
                    continue
                v = _num(raw)
                if v is not None:
                    series.setdefault(col, {})[step] = v
    curves = []
    for col, pts in series.items():
        steps = sorted(pts)
        curves.append(Curve(stage, path, col, steps, [pts[s] for s in steps]))
    return curves


def _load_curves(run: RunData) -> None:
    ck = run.root / "checkpoints"
    if not ck.is_dir():
        return
    for path in sorted(ck.rglob("*.csv")):
        rel = path.relative_to(ck)
        # Copies of the log inside trainer checkpoints (checkpoint-N/) would duplicate the series.
        if any(p.startswith("checkpoint-") for p in rel.parts[:-1]):
            continue
        stage = rel.parts[0] if len(rel.parts) > 1 else path.stem
        try:
            run.curves.extend(read_curves(path, stage))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            run.problems.append(f"{path}: unreadable CSV log ({e})")


def _load_thoughts(run: RunData) -> None:
    stats = run.root / "thoughts" / "stats.json"
    if stats.is_file():
        try:
            data = json.loads(stats.read_text())
            run.thoughts_stats = data if isinstance(data, dict) else None
            if run.thoughts_stats is None:
                run.problems.append(f"{stats}: expected a JSON object")
        except json.JSONDecodeError as e:
            run.problems.append(f"{stats}:{e.lineno}: malformed JSON ({e.msg})")
    ex = run.root / "thoughts" / "examples.md"
    if ex.is_file():
        run.examples_path = ex


def _load_titles(run: RunData) -> None:
    items = run.root / "prepared" / "items.jsonl"
    if not items.is_file():
        return
    from ..data.schema import read_jsonl

    try:
        run.titles = {int(r["item"]): str(r["title"]) for r in read_jsonl(items)}
    except (ValueError, KeyError, TypeError) as e:
        run.problems.append(f"{items}: {e}")


def _load_prepared_meta(run: RunData) -> None:
    meta = run.root / "prepared" / "meta.json"
    if not meta.is_file():
        return
    try:
        run.prepared_meta = json.loads(meta.read_text())
    except (ValueError, OSError) as e:
        run.problems.append(f"{meta}: {e}")


def load_run(root: str | Path) -> RunData:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run folder")
    run = RunData(root)
    _load_results(run)
    _load_curves(run)
    _load_thoughts(run)
    _load_titles(run)
    _load_prepared_meta(run)
    return run
