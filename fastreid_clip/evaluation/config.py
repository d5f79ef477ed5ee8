"""Config keys of the chunked evaluator (:class:`~fastreid_clip.evaluation.ChunkedReidEvaluator`).

FastReID's own ``TEST.METRIC``, ``TEST.AQE.*`` and ``TEST.RERANK.{ENABLED,K1,K2,LAMBDA}`` keep their meaning.
"""

from fastreid.config import CfgNode

__all__ = ["add_eval_config"]


def add_eval_config(cfg: CfgNode) -> None:
    """Adds the evaluator's keys, with their defaults, to ``cfg`` (in place; ``cfg`` must not be frozen).

    Args:
        cfg: a FastReID config.
    """
    # Queries ranked per chunk; memory is O(CHUNK_SIZE x gallery size). 0: about 4M distances per chunk on
    # the CPU and 128M on CUDA (e.g. 51 / 1633 queries for MSMT17's 82,161 gallery images).
    cfg.TEST.CHUNK_SIZE = 0
    # CUHK03 single-gallery-shot CMC (one random gallery image per identity, averaged over 10 seeded draws)
    # instead of the Market-1501 CMC. mAP and mINP are the same under both.
    cfg.TEST.CUHK03_METRIC = False
    # k-nearest-neighbour search of the k-reciprocal re-ranking: "faiss" (a GPU index when faiss has GPU
    # support and the features are on CUDA, a CPU index otherwise), "torch" (exact matmul + top-k on the
    # features' device), or "auto" (faiss on the CPU, faiss-GPU when available, else torch on CUDA).
    cfg.TEST.RERANK.BACKEND = "auto"
