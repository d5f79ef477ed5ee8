from .classification import cross_entropy_label_smooth
from .metric import batch_hard_triplet_loss, pairwise_euclidean

__all__ = ["cross_entropy_label_smooth", "batch_hard_triplet_loss", "pairwise_euclidean"]
