"""The shared evaluator: it takes any encoder (ours, timm, torchvision) and never imports methods/."""

from ssl_transfer.evaluation.features import extract_features
from ssl_transfer.evaluation.knn import knn_classify, knn_predict

__all__ = ["extract_features", "knn_predict", "knn_classify"]
