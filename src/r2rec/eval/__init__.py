"""Evaluation: per-sample metrics, bootstrap CIs over samples and seeds, the protocol, result files.

    from r2rec.eval import EvalProtocol, Prediction, evaluate, write_result
"""

from .evaluator import EvalProtocol, evaluate, validate
from .metrics import ANSWER_METRICS, RANK_METRICS, Prediction
from .results import headline_ratios, load_predictions, load_results, markdown_table, write_result

__all__ = ["EvalProtocol", "Prediction", "evaluate", "validate", "write_result", "load_results",
           "load_predictions", "markdown_table", "headline_ratios", "ANSWER_METRICS", "RANK_METRICS"]
