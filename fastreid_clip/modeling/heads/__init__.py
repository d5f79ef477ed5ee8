from .bnneck import BNNeckClassifier
from .projection import ProjectionHead

__all__ = ["BNNeckClassifier", "ProjectionHead"]
