"""Built-in procedural synthetic person ReID data (see ``docs/synthetic_data.md``).

Importing this package registers :class:`SyntheticReID` in FastReID's ``DATASET_REGISTRY``.
"""

from .attributes import IdentityAttributes, caption, sample_identities, sample_identity
from .dataset import (
    SyntheticParams,
    SyntheticReID,
    add_synthetic_config,
    export_market1501,
    generate_synthetic_reid,
    generator_digest,
    load_meta,
    synthetic_kwargs_from_cfg,
)
from .pretrain_corpus import (
    CORPUS_SPLITS,
    RESERVED_REID_IDS,
    RESERVED_REID_SEEDS,
    PretrainCorpus,
    ZeroShotAttribute,
    appearance_key,
    attribute_space_size,
    corpus_identities,
    corpus_split_of,
    letterbox,
    reserved_reid_appearances,
    varied_caption,
    zero_shot_attributes,
)
from .render import CameraStyle, DomainStyle, domain_style, render_image, sample_camera_style

__all__ = [
    "CORPUS_SPLITS",
    "CameraStyle",
    "DomainStyle",
    "IdentityAttributes",
    "PretrainCorpus",
    "RESERVED_REID_IDS",
    "RESERVED_REID_SEEDS",
    "SyntheticParams",
    "SyntheticReID",
    "ZeroShotAttribute",
    "add_synthetic_config",
    "appearance_key",
    "attribute_space_size",
    "caption",
    "corpus_identities",
    "corpus_split_of",
    "domain_style",
    "export_market1501",
    "generate_synthetic_reid",
    "generator_digest",
    "letterbox",
    "load_meta",
    "render_image",
    "reserved_reid_appearances",
    "sample_camera_style",
    "sample_identities",
    "sample_identity",
    "synthetic_kwargs_from_cfg",
    "varied_caption",
    "zero_shot_attributes",
]
