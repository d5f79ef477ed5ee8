"""Models: CLIP backbones and text encoder, heads, losses and meta-architectures (registered on import)."""

from . import backbones, heads, losses, meta_arch, prompts  # noqa: F401  (registration side effects)
