#!/usr/bin/env python
"""Convert a released CLIP-ReID checkpoint (Syliz517/CLIP-ReID) into a fastreid-clip ``ClipReID`` checkpoint.

The checkpoint does not record the input geometry, so the config the model will be evaluated with supplies it
(INPUT.SIZE_TRAIN, MODEL.BACKBONE.STRIDE_SIZE, MODEL.BACKBONE.LAST_STRIDE); the position table is checked
against it and a mismatch fails with the expected and found row counts. The output is ``{"model": state_dict}``,
loadable with MODEL.WEIGHTS / fastreid_clip.checkpoint.load_model_weights.

    python tools/convert_clipreid.py Market1501_clipreid_ViT-B-16_60.pth pretrained/market_clipreid_vit.pth \\
        --config-file configs/CLIP-ReID/market_vit.yml
    python tools/convert_clipreid.py MSMT17_clipreid_12x12sie_ViT-B-16_60.pth out.pth \\
        --config-file configs/CLIP-ReID/msmt17_vit.yml MODEL.BACKBONE.STRIDE_SIZE "(12, 12)"
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_clip  # noqa: E402,F401
import torch  # noqa: E402

from fastreid_clip.checkpoint.convert import (convert_clipreid_state_dict, detect_clipreid_layout,  # noqa: E402
                                              expected_position_rows, summarize_clipreid_state_dict)
from fastreid_clip.checkpoint.files import describe_load_error, refused_global  # noqa: E402
from fastreid_clip.config import get_cfg, merge_config_file  # noqa: E402


def load_checkpoint(path: str, trust_pickle: bool = False) -> dict:
    """The state dict in ``path`` (a bare state dict, or one under "model" / "state_dict")."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint '{path}' does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # noqa: BLE001 - diagnosed below without unpickling anything
        reason = describe_load_error(path, err)
        if trust_pickle or refused_global(err) is None:  # damaged, empty or not a torch file: no pickle advice
            raise SystemExit(f"error: {reason}")
        raise SystemExit(f"error: {reason}.\nIf you trust its source, re-run with "
                         f"--trust-pickle (torch.load(weights_only=False): unpickling can execute code).")
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise SystemExit(f"error: '{path}' holds no state dict")
    return obj


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="released CLIP-ReID checkpoint (.pth)")
    parser.add_argument("dst", help="output FastReID checkpoint (.pth)")
    parser.add_argument("--config-file", required=True, help="the config the converted model will run with")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="load with torch.load(weights_only=False) (only for files you trust)")
    parser.add_argument("opts", nargs="*", default=[], help="config overrides: KEY VALUE pairs")
    args = parser.parse_intermixed_args(argv)

    cfg = merge_config_file(get_cfg(), args.config_file, args.opts)
    image_size = tuple(int(v) for v in cfg.INPUT.SIZE_TRAIN)
    stride = tuple(int(v) for v in cfg.MODEL.BACKBONE.STRIDE_SIZE)
    last_stride = int(cfg.MODEL.BACKBONE.LAST_STRIDE)

    state = load_checkpoint(args.src, args.trust_pickle)
    if not detect_clipreid_layout(state):
        if any(k.startswith(("backbone.", "module.backbone.")) for k in state):
            raise SystemExit(f"error: '{args.src}' already uses fastreid-clip's layout (backbone.*): load it directly")
        sample = ", ".join(list(state)[:5])
        raise SystemExit(f"error: '{args.src}' is not a CLIP-ReID model state dict (keys start with: {sample})")
    try:
        converted = convert_clipreid_state_dict(state, image_size=image_size, stride=stride, patch_size=None,
                                                last_stride=last_stride)
    except ValueError as err:
        raise SystemExit(f"error: {err}")

    info = summarize_clipreid_state_dict(converted)
    if info["backbone"] == "vit":
        patch = int(converted["backbone.visual.conv1.weight"].shape[-1])
        _, grid = expected_position_rows("vit", image_size, stride=stride, patch_size=patch)
        geometry = f"{image_size[0]}x{image_size[1]} input, patch {patch}, stride {stride}"
        tower = f"ViT (width {info['width']}, {info['layers']} blocks)"
    else:
        _, grid = expected_position_rows("resnet", image_size, last_stride=last_stride)
        geometry = f"{image_size[0]}x{image_size[1]} input, last stride {last_stride}"
        tower = f"ModifiedResNet (width {info['width']}, blocks {info['layers']})"

    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({"model": converted}, args.dst)

    print(f"converted {info['tensors']} tensors: {args.src} -> {args.dst}")
    print(f"  backbone      : {tower}")
    print(f"  grid          : {grid[0]}x{grid[1]} + CLS = {info['position_rows']} position rows ({geometry})")
    print(f"  identities C  : {info['num_classes']}")
    if info["has_text"]:
        print(f"  context M     : {info['context_tokens']} learnable tokens per identity")
    else:
        print("  text/prompts  : none (CLIP-ReID baseline model -> ClipBaseline layout)")
    print(f"  SIE           : {'on, ' + str(info['sie_rows']) + ' rows' if info['sie_rows'] else 'off'}")
    sie_cfg = bool(cfg.MODEL.BACKBONE.SIE_CAMERA or cfg.MODEL.BACKBONE.SIE_VIEW)
    if sie_cfg != bool(info["sie_rows"]):
        print(f"warning: the checkpoint has SIE {'on' if info['sie_rows'] else 'off'} but the config has "
              f"MODEL.BACKBONE.SIE_CAMERA/SIE_VIEW {'on' if sie_cfg else 'off'}; set them to match before loading")
    if tuple(cfg.INPUT.SIZE_TEST) != image_size:
        print(f"warning: INPUT.SIZE_TEST {list(cfg.INPUT.SIZE_TEST)} differs from INPUT.SIZE_TRAIN "
              f"{list(image_size)}; the model needs test images at the train size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
