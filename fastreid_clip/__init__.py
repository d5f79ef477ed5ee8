"""fastreid-clip: CLIP-based person/vehicle re-identification methods as a FastReID extension.

Importing this package first applies the torch-2 / Python-3.11 / CPU fixes FastReID 1.4.0 needs
(:mod:`fastreid_clip.compat`), then registers our backbones, meta-architectures and datasets into
FastReID's registries.
"""

from . import compat

compat.apply()

__version__ = "0.1.0"
