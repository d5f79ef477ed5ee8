"""Exact re-identification evaluation with bounded memory (chunked ranking, sparse re-ranking, gathering).

See ``docs/evaluation.md``.
"""

from .config import add_eval_config
from .evaluator import ChunkedReidEvaluator
from .gather import gather_to_main, inference_shard_sizes
from .multi_target import evaluate_targets, format_target_table
from .ranking import (
    DistanceFn,
    RankingResult,
    default_chunk_size,
    evaluate_rank_chunked,
    evaluate_rank_from_distances,
    feature_distance,
    normalize_,
)
from .rerank import SparseJaccard, average_query_expansion, knn, reranked_distance
from .row_store import RowStore

__all__ = [
    "ChunkedReidEvaluator",
    "DistanceFn",
    "RankingResult",
    "RowStore",
    "SparseJaccard",
    "add_eval_config",
    "average_query_expansion",
    "default_chunk_size",
    "evaluate_rank_chunked",
    "evaluate_targets",
    "evaluate_rank_from_distances",
    "feature_distance",
    "format_target_table",
    "gather_to_main",
    "inference_shard_sizes",
    "knn",
    "normalize_",
    "reranked_distance",
]
