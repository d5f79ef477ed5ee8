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
from .render import CameraStyle, DomainStyle, domain_style, render_image, sample_camera_style

__all__ = [
    "CameraStyle",
    "DomainStyle",
    "IdentityAttributes",
    "SyntheticParams",
    "SyntheticReID",
    "add_synthetic_config",
    "caption",
    "domain_style",
    "export_market1501",
    "generate_synthetic_reid",
    "generator_digest",
    "load_meta",
    "render_image",
    "sample_camera_style",
    "sample_identities",
    "sample_identity",
    "synthetic_kwargs_from_cfg",
]
