"""Multi-source training data: per-item source-domain labels, and per-domain views of the synthetic data set.

**Domain labels.** With several datasets in ``DATASETS.NAMES`` (CLIP-FGDI's protocols: e.g. Market-1501 +
CUHK-SYSU + CUHK02 + CUHK03), the domain of a training image is the index of its dataset in ``DATASETS.NAMES``
(:func:`fastreid_clip.data.build.train_items` with ``with_sources=True``). FastReID prefixes every training pid and
camera with the dataset's name (``market1501_12``), so identities stay distinct across sources.

**Synthetic sources.** ``SyntheticReIDDomain<k>`` (k = 0..7) is the training split of ``SyntheticReID`` (same
``DATASETS.SYNTHETIC`` keys, the same generated images) restricted to the identities filmed in domain ``k``; its
pids and cameras are prefixed ``synthetic_d<k>`` (each synthetic domain has its own cameras). Listing
``SyntheticReIDDomain0``, ``1`` and ``2`` in ``DATASETS.NAMES`` therefore trains on exactly the images
``SyntheticReID`` with ``TRAIN_DOMAINS (0, 1, 2)`` trains on, as three sources with domain labels 0, 1, 2, and a
held-out domain (``TEST_DOMAINS (3,)``) is tested through ``SyntheticReID`` itself. Query and gallery of a view are
those of ``SyntheticReID`` in domain ``k`` (empty when no test identity is filmed there).
"""

from __future__ import annotations

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from .synthetic.dataset import SyntheticReID, synthetic_kwargs_from_cfg

__all__ = ["SyntheticDomainView", "SYNTHETIC_DOMAIN_VIEWS", "synthetic_domain_view"]

MAX_VIEW_DOMAINS = 8


class SyntheticDomainView(ImageDataset):
    """The part of ``SyntheticReID`` filmed in one domain (:attr:`domain`), as a dataset of its own.

    Args:
        root: datasets root (``SyntheticReID`` generates or reuses its data under it).
        **kwargs: ``SyntheticReID``'s parameters plus FastReID's ``ImageDataset`` keywords (``combineall``, ...).
    """

    domain = 0
    dataset_name = "synthetic_d0"

    @staticmethod
    def kwargs_from_config(cfg) -> dict:
        return synthetic_kwargs_from_cfg(cfg)

    def __init__(self, root: str = "datasets", **kwargs):
        dataset_keys = {"combineall", "verbose", "mode", "transform"}
        base_kwargs = {k: v for k, v in kwargs.items() if k not in dataset_keys}
        base = SyntheticReID(root=root, verbose=False, **base_kwargs)
        if not 0 <= self.domain < base.params.num_domains:
            raise ValueError(f"DATASETS.NAMES: {type(self).__name__} needs domain {self.domain}, but the synthetic "
                             f"data has DATASETS.SYNTHETIC.NUM_DOMAINS = {base.params.num_domains}")
        self.base = base
        self.params = base.params
        self.domains = {path: d for path, d in base.domains.items() if d == self.domain}
        self.captions = {path: base.captions[path] for path in self.domains}
        name = self.dataset_name

        def strip(value: str) -> str:  # "synthetic_5" -> "5"
            return str(value).rsplit("_", 1)[-1]

        train = [(path, f"{name}_{strip(pid)}", f"{name}_{strip(cam)}") for path, pid, cam in base.train
                 if path in self.domains]
        query = [item for item in base.query if item[0] in self.domains]
        gallery = [item for item in base.gallery if item[0] in self.domains]
        super().__init__(train, query, gallery, **{k: v for k, v in kwargs.items() if k in dataset_keys})


def synthetic_domain_view(domain: int) -> type:
    """The registered ``SyntheticReIDDomain<domain>`` class."""
    return DATASET_REGISTRY.get(f"SyntheticReIDDomain{domain}")


def _register_views():
    views = {}
    for k in range(MAX_VIEW_DOMAINS):
        name = f"SyntheticReIDDomain{k}"
        cls = type(name, (SyntheticDomainView,), {"domain": k, "dataset_name": f"synthetic_d{k}",
                                                  "__doc__": f"``SyntheticReID``'s images of domain {k}."})
        if name not in DATASET_REGISTRY._obj_map:
            DATASET_REGISTRY.register(cls)
        views[name] = DATASET_REGISTRY.get(name)
    return views


SYNTHETIC_DOMAIN_VIEWS = _register_views()
