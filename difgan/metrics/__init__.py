"""Metrics: FID, KID, IS and precision/recall in the Inception and in-domain feature spaces.

See docs/metrics.md. Integration points for ``difgan.run``: ``callbacks_from_config``, ``final_evaluation``,
``run_task_train_features``.
"""

from difgan.metrics.config import MetricsError, MetricsSettings, settings_from_config
from difgan.metrics.evaluation import Evaluator, format_table, write_metrics_json
from difgan.metrics.formulas import (
    feature_statistics,
    fid,
    fid_against_features,
    fid_from_statistics,
    inception_score,
    kid,
    precision_recall,
)
from difgan.metrics.tasks import (
    callbacks_from_config,
    final_evaluation,
    run_task_train_features,
    validate_metrics_config,
)

__all__ = [
    "Evaluator", "MetricsError", "MetricsSettings", "callbacks_from_config", "feature_statistics", "fid",
    "fid_against_features", "fid_from_statistics", "final_evaluation", "format_table", "inception_score",
    "kid", "precision_recall", "run_task_train_features", "settings_from_config", "validate_metrics_config",
    "write_metrics_json",
]
