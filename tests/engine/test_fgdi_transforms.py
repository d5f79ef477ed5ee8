"""CLIP-FGDI's input pipeline (INPUT.PIPELINE fgdi): instance-normalised tensors, AugMix in the train pipeline."""

import torch
import torchvision.transforms as T
from PIL import Image

from fastreid_clip.config import get_cfg
from fastreid_clip.data.transforms import InstanceNormImage, build_clip_transforms


def _cfg():
    cfg = get_cfg()
    cfg.INPUT.PIPELINE = "fgdi"
    cfg.INPUT.SIZE_TRAIN = [224, 224]
    cfg.INPUT.SIZE_TEST = [224, 224]
    return cfg


def test_instance_norm_per_image_and_channel():
    image = torch.rand(3, 8, 4) * 255
    image[1] = image[1] * 0.1 + 30
    out = InstanceNormImage()(image)
    assert torch.allclose(out.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)
    var = (image / 255).var(dim=(1, 2), unbiased=False)
    assert torch.allclose(out.var(dim=(1, 2), unbiased=False), var / (var + 1e-5), atol=1e-4)  # ~1 (eps)
    x = image.double() / 255
    expected = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.var(dim=(1, 2), unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_fgdi_pipelines():
    cfg = _cfg()
    train = build_clip_transforms(cfg, is_train=True)
    names = [type(t).__name__ for t in train.transforms]
    assert names == ["Resize", "RandomGrayscale", "Pad", "RandomCrop", "RandomHorizontalFlip", "RandomApply",
                     "RandomApply", "PILToTensor255", "InstanceNormImage"]
    augmix = train.transforms[6]
    assert isinstance(augmix.transforms[0], T.AugMix) and augmix.p == 0.6
    image = Image.new("RGB", (64, 128), (120, 30, 200))
    image.paste((10, 240, 30), (0, 0, 32, 64))
    torch.manual_seed(0)
    out = train(image)
    assert out.shape == (3, 224, 224) and abs(float(out.mean())) < 1e-4
    test = build_clip_transforms(cfg, is_train=False)
    assert [type(t).__name__ for t in test.transforms] == ["Resize", "PILToTensor255", "InstanceNormImage"]
    assert build_clip_transforms(get_cfg(), is_train=False).transforms[-1].__class__.__name__ == "PILToTensor255"
