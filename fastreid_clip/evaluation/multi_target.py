"""Evaluation on several target datasets in one run: one row per target and the average row, as the
domain-generalisation tables report them (CLIP-FGDI Tab. I-II: mAP, R1, R5, R10).

Targets with seeded splits (``SmallDGTestSet``: GRIDTest, VIPeRTest, PRIDTest, iLIDSTest) are evaluated on every
split of ``DG.SPLITS`` (``single9``: split 9; ``avg10``: splits 0-9, averaged); other targets once. The average row
is the unweighted mean over targets. ``ClipTrainer.test`` uses it when ``DG.MULTI_TARGET`` is True.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping

__all__ = ["METRICS", "evaluate_targets", "average_rows", "format_target_table", "target_splits"]

logger = logging.getLogger(__name__)

METRICS = ("mAP", "Rank-1", "Rank-5", "Rank-10")
_HEADERS = {"mAP": "mAP", "Rank-1": "R1", "Rank-5": "R5", "Rank-10": "R10"}
AVERAGE = "Average"


def target_splits(cfg, dataset_name: str) -> List[int]:
    """The split ids to evaluate ``dataset_name`` on (``[-1]`` = the dataset has no splits)."""
    from fastreid.data.datasets import DATASET_REGISTRY

    from ..data.datasets.dg_small import SmallDGTestSet, split_ids_of

    cls = DATASET_REGISTRY._obj_map.get(dataset_name)
    if isinstance(cls, type) and issubclass(cls, SmallDGTestSet):
        return split_ids_of(cfg)
    return [-1]


def average_rows(rows: List[Mapping[str, float]]) -> Dict[str, float]:
    """Unweighted mean of :data:`METRICS` over ``rows`` (each a results dict with those keys)."""
    for row in rows:
        missing = [m for m in METRICS if m not in row]
        if missing:
            raise ValueError(f"results {sorted(row)} lack {missing} (a gallery smaller than 10 images has no Rank-10)")
    return {m: sum(float(r[m]) for r in rows) / len(rows) for m in METRICS}


def evaluate_targets(cfg, evaluate_one: Callable[[object, str], Mapping[str, float]]) -> "OrderedDict[str, Dict]":
    """Evaluate every ``DATASETS.TESTS`` target (each split of ``DG.SPLITS`` where it has splits).

    Args:
        cfg: the config (cloned per split with ``DG.SPLIT_ID`` set).
        evaluate_one: ``(cfg, dataset_name) -> results`` with :data:`METRICS` in % (FastReID's evaluator dict);
            an empty dict (non-main processes) is passed through.

    Returns:
        ``{target: {metric: value}, ..., "Average": {...}}`` on the main process (the per-target values are split
        means); ``{}`` elsewhere. The table (:func:`format_target_table`) is logged.
    """
    rows: "OrderedDict[str, Dict]" = OrderedDict()
    split_note = set()
    for name in cfg.DATASETS.TESTS:
        results = []
        for split in target_splits(cfg, name):
            sub = cfg.clone()
            sub.defrost()
            sub.DG.SPLIT_ID = split
            sub.freeze()
            results.append(evaluate_one(sub, name))
            if split >= 0:
                split_note.add(cfg.DG.SPLITS)
        if not all(results):
            return OrderedDict()
        rows[name] = average_rows(results)
    if not rows:
        return rows
    rows[AVERAGE] = average_rows(list(rows.values()))
    note = {"single9": "small targets: split 9", "avg10": "small targets: mean of splits 0-9"}
    logger.info("Multi-target results (%s):\n%s", ", ".join(note[s] for s in sorted(split_note)) or "no split targets",
                format_target_table(rows))
    return rows


def format_target_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table: ``| Target | mAP | R1 | R5 | R10 |``, one row per target and the average (in %)."""
    header = "| Target | " + " | ".join(_HEADERS[m] for m in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{float(values[m]):.1f}" for m in METRICS) + " |")
    return "\n".join(lines)
