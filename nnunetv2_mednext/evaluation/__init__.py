"""Evaluation: Dice / HD95 (mm, and TransUNet's pixel rules), folder evaluation with reports, model comparison."""

from .evaluate import evaluate_folders, write_reports
from .metrics import dice, hd95, mm_metrics, transunet_metrics

__all__ = ["dice", "evaluate_folders", "hd95", "mm_metrics", "transunet_metrics", "write_reports"]
