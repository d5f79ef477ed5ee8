"""``ChunkedReidEvaluator``: a drop-in replacement for FastReID's ``ReidEvaluator`` with bounded memory."""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from typing import Optional

import torch
from fastreid.config import CfgNode
from fastreid.evaluation.evaluator import DatasetEvaluator

from .config import add_eval_config
from .gather import gather_to_main
from .ranking import evaluate_rank_from_distances, feature_distance, normalize_
from .rerank import average_query_expansion, reranked_distance
from .row_store import RowStore

__all__ = ["ChunkedReidEvaluator"]

logger = logging.getLogger(__name__)

INDEX_KEY = "index"
"""Optional batch key with each sample's dataset index; when present, gathering orders samples by it."""


class ChunkedReidEvaluator(DatasetEvaluator):
    """Re-identification evaluator: FastReID's metrics and result keys, exact, chunked, on the features' device.

    Used like FastReID's ``ReidEvaluator`` (``inference_on_dataset`` calls ``reset``, ``process`` per batch,
    ``evaluate``; flip-test averaging happens there, before ``process``). Differences:

    * batch features stay on their device (no per-batch copy to the CPU), and ranking runs there;
    * the ``Q x G`` distance matrix is never built: see :mod:`~fastreid_clip.evaluation.ranking`;
    * re-ranking and query expansion are the sparse / chunked ones of :mod:`~fastreid_clip.evaluation.rerank`;
    * with several processes, samples are put back in dataset order (by ``inputs["index"]`` when batches
      carry it, else by checking the contiguous ``InferenceSampler`` shards) and only rank 0 evaluates;
    * ``evaluate`` consumes the stored features (call ``reset``/``process`` again to re-evaluate);
    * ``TEST.ROC`` is not supported (it needs the dense matrix) and is skipped with a warning.

    Config: ``TEST.METRIC``, ``TEST.AQE.*``, ``TEST.RERANK.*`` as in FastReID, plus the keys of
    :func:`~fastreid_clip.evaluation.config.add_eval_config` (defaults are used when ``cfg`` lacks them).

    Args:
        cfg: FastReID config.
        num_query: number of query samples; the first ``num_query`` samples of the test set are queries.
        output_dir: unused; kept for FastReID's signature.
        num_samples: how many samples this process will be given (the whole test set with one process, its
            shard with several), when known: storage for them is reserved at the first batch, so that
            ``evaluate`` finds the features in one piece instead of copying them together
            (``ClipTrainer.build_evaluator`` passes it). More samples than that are still stored, in
            further blocks.
    """

    def __init__(
        self, cfg: CfgNode, num_query: int, output_dir: Optional[str] = None, num_samples: Optional[int] = None
    ):
        if "CHUNK_SIZE" not in cfg.TEST:
            cfg = cfg.clone()
            cfg.defrost()
            add_eval_config(cfg)
        self.cfg = cfg
        self._num_query = num_query
        self._output_dir = output_dir
        self._num_samples = num_samples or 0
        self.reset()

    def reset(self) -> None:
        self._feats, self._pids, self._camids, self._indices = (
            RowStore(first_block_rows=self._num_samples) for _ in range(4)
        )

    def process(self, inputs: dict, outputs: torch.Tensor) -> None:
        """Stores a batch.

        Args:
            inputs: the batch given to the model: ``targets`` ``[B]`` identities, ``camids`` ``[B]``
                cameras, optionally ``index`` ``[B]`` dataset indices.
            outputs: ``[B, D]`` features returned by the model (any device).
        """
        self._feats.append(outputs.detach().to(torch.float32))
        self._pids.append(inputs["targets"])
        self._camids.append(inputs["camids"])
        if INDEX_KEY in inputs:
            self._indices.append(torch.as_tensor(inputs[INDEX_KEY]))

    def evaluate(self) -> dict:
        """Ranks the gallery for every query.

        Returns:
            On the main process, ``Rank-1``, ``Rank-5``, ``Rank-10``, ``mAP``, ``mINP`` and ``metric``
            (``(mAP + Rank-1) / 2``), in percent; ``{}`` on the other processes.
        """
        if self._indices.batches and self._indices.batches != self._feats.batches:
            raise RuntimeError(f"only some batches carry {INDEX_KEY!r}")
        feats, pids, camids = (store.consume() for store in (self._feats, self._pids, self._camids))
        indices = self._indices.consume() if self._indices.batches else None
        self.reset()
        gathered = gather_to_main([feats, pids, camids], indices)
        del feats
        if gathered is None:
            return {}
        feats, pids, camids = gathered
        test = self.cfg.TEST
        chunk_size = test.CHUNK_SIZE or None
        query, gallery = feats[: self._num_query], feats[self._num_query :]

        if test.AQE.ENABLED:
            logger.info("Test with AQE setting")
            query, gallery = average_query_expansion(
                query, gallery, test.AQE.QE_TIME, test.AQE.QE_K, test.AQE.ALPHA, chunk_size
            )
        normalized = test.METRIC == "cosine"
        if normalized:  # in place: our own copy, and every later step wants normalised features
            normalize_(query)
            normalize_(gallery)
        if test.RERANK.ENABLED:
            logger.info("Test with rerank setting")
            distance_fn = reranked_distance(
                query, gallery, test.METRIC, test.RERANK.K1, test.RERANK.K2, test.RERANK.LAMBDA,
                test.RERANK.BACKEND, chunk_size, normalized,
            )
        else:
            distance_fn = feature_distance(query, gallery, test.METRIC, normalized, reuse_output=True)
        if test.ROC.ENABLED:
            logger.warning("TEST.ROC is not supported by ChunkedReidEvaluator; skipping the ROC metrics")

        result = evaluate_rank_from_distances(
            distance_fn,
            pids[: self._num_query], pids[self._num_query :],
            camids[: self._num_query], camids[self._num_query :],
            chunk_size=chunk_size, cuhk03=test.CUHK03_METRIC, device=feats.device,
        )
        results = OrderedDict()
        for rank in (1, 5, 10):
            if rank <= len(result.cmc):
                results[f"Rank-{rank}"] = float(result.cmc[rank - 1]) * 100
        results["mAP"] = result.mAP * 100
        results["mINP"] = result.mINP * 100
        results["metric"] = (result.mAP + float(result.cmc[0])) / 2 * 100
        return copy.deepcopy(results)
