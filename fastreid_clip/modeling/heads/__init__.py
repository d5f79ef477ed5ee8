from .bnneck import BNNeckClassifier

__all__ = ["BNNeckClassifier"]
