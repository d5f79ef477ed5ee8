#!/usr/bin/env python
"""Convert an OpenAI CLIP TorchScript archive (ViT-B-16.pt, RN50.pt, ...) into a safetensors state dict, once.

Loading a TorchScript archive unpickles code, so do this only for files you trust. The output holds plain tensors
with open_clip's key names (minus the archive's input_resolution/context_length/vocab_size entries) and is what
MODEL.BACKBONE.PRETRAIN_PATH should point to afterwards (no TRUST_TORCHSCRIPT needed).

    python tools/convert_openai_clip.py ~/Downloads/ViT-B-16.pt pretrained/ViT-B-16.safetensors --arch ViT-B-16
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_clip  # noqa: E402,F401
from fastreid_clip.modeling.backbones.weights import (WeightFileError, is_torchscript_archive,  # noqa: E402
                                                      read_clip_state_dict)


def convert(src: str, dst: str, arch: str = None) -> int:
    """Write ``src``'s state dict to ``dst`` (safetensors); checks it against ``arch`` when given. Returns #tensors."""
    from safetensors.torch import save_file

    if not is_torchscript_archive(src):
        raise WeightFileError(f"'{src}' is not a TorchScript archive; open_clip state dicts load directly")
    state = read_clip_state_dict(src, arch or "unknown", trust_torchscript=True)
    if arch:
        from fastreid_clip.modeling.backbones.clip_model import register_model_configs
        from fastreid_clip.modeling.backbones.weights import check_state_dict_matches
        import open_clip

        register_model_configs()
        reference = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True).state_dict()
        check_state_dict_matches(state, reference, src, arch)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, dst, metadata={"source": os.path.basename(src)})
    return len(state)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="OpenAI TorchScript archive (trusted)")
    parser.add_argument("dst", help="output .safetensors file")
    parser.add_argument("--arch", default=None, help="open_clip architecture to check the weights against")
    args = parser.parse_args(argv)
    if not args.dst.endswith(".safetensors"):
        parser.error("the output file must end with .safetensors")
    count = convert(args.src, args.dst, args.arch)
    print(f"wrote {count} tensors to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
