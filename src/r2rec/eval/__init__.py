"""Evaluation: per-sample metrics, bootstrap CIs over samples and seeds, the protocol, result files, and the
LLM evaluation stage (:mod:`r2rec.eval.runner`; ``r2rec eval`` parses its arguments in :mod:`r2rec.eval.cli`).

    from r2rec.eval import EvalProtocol, Prediction, evaluate, write_result

The yardstick imports neither the training code (:mod:`r2rec.train`) nor the baselines: it reads a trained
model's checkpoint from disk, and a baseline hands it predictions (:mod:`r2rec.baselines.stage`).
"""

from .evaluator import EvalProtocol, evaluate, validate
from .metrics import ANSWER_METRICS, RANK_METRICS, Prediction
from .results import headline_ratios, load_predictions, load_results, markdown_table, write_result

__all__ = [
    "EvalProtocol",
    "Prediction",
    "evaluate",
    "validate",
    "write_result",
    "load_results",
    "load_predictions",
    "markdown_table",
    "headline_ratios",
    "ANSWER_METRICS",
    "RANK_METRICS",
]
