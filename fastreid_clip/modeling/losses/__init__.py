from .apn import APN_MODES, apn_contrastive_loss, apn_loss, apn_triplet_loss, apnce_loss
from .classification import cross_entropy_label_smooth
from .contrastive import i2t_loss, nt_xent_loss, supcon_loss, t2i_loss
from .metric import batch_hard_triplet_loss, pairwise_euclidean

__all__ = ["cross_entropy_label_smooth", "i2t_loss", "nt_xent_loss", "supcon_loss", "t2i_loss",
           "batch_hard_triplet_loss", "pairwise_euclidean", "APN_MODES", "apn_loss", "apn_triplet_loss",
           "apn_contrastive_loss", "apnce_loss"]
