from .bnneck import BNNeckClassifier
from .domain import DomainClassifier, GradientReversal, GradientReversalLayer, grad_reverse
from .projection import ProjectionHead

__all__ = ["BNNeckClassifier", "ProjectionHead", "DomainClassifier", "GradientReversal", "GradientReversalLayer",
           "grad_reverse"]
