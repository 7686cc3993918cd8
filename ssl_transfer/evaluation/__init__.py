"""The shared evaluator: it takes any encoder (ours, timm, torchvision) and never imports methods/."""

from ssl_transfer.evaluation.features import extract_features
from ssl_transfer.evaluation.knn import knn_classify, knn_scores

__all__ = ["extract_features", "knn_scores", "knn_classify"]
