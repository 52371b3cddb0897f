"""The run report: Markdown + a self-contained HTML page with plots (``r2rec report --run DIR``)."""

from .report import write_report

__all__ = ["write_report"]
