from .classification import cross_entropy_label_smooth
from .contrastive import i2t_loss, nt_xent_loss, supcon_loss, t2i_loss
from .metric import batch_hard_triplet_loss, pairwise_euclidean

__all__ = ["cross_entropy_label_smooth", "i2t_loss", "nt_xent_loss", "supcon_loss", "t2i_loss",
           "batch_hard_triplet_loss", "pairwise_euclidean"]
