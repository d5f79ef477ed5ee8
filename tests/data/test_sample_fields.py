"""Per-sample fields on training items (``ReIDImageDataset(sample_fields=...)``, ``train_sample_fields``)."""

import numpy as np
import pytest
import torch
from fastreid.data.build import fast_batch_collator
from PIL import Image

from fastreid_clip.data.build import ReIDImageDataset, meta_arch_sample_fields
from fastreid_clip.data.multi_view import MultiViewReIDDataset


@pytest.fixture
def items(tmp_path):
    out = []
    for i in range(4):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (8, 16), (40 * i, 0, 0)).save(path)
        out.append((str(path), f"set_{i // 2}", f"set_{i % 2}"))
    return out


def _to_tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)


def test_fields_follow_their_item_and_collate(items):
    domains = torch.tensor([3, 1, 4, 1])
    embeds = torch.randn(4, 5)
    data = ReIDImageDataset(items, _to_tensor, sample_fields={"domains": domains, "caption_embeds": embeds,
                                                               "names": ["a", "b", "c", "d"]})
    assert data[2]["domains"] == 4 and data[2]["names"] == "c"
    torch.testing.assert_close(data[2]["caption_embeds"], embeds[2])
    batch = fast_batch_collator([data[i] for i in (3, 0)])
    assert batch["domains"].tolist() == [1, 3]
    torch.testing.assert_close(batch["caption_embeds"], embeds[[3, 0]])
    assert batch["images"].shape == (2, 3, 16, 8)


def test_multi_view_items_carry_fields(items):
    data = MultiViewReIDDataset(items, _to_tensor, [_to_tensor, _to_tensor], sample_fields={"domains": [0, 1, 2, 3]})
    item = data[1]
    assert item["domains"] == 1 and item["views"].shape == (2, 3, 16, 8)


def test_field_length_and_reserved_names_are_checked(items):
    with pytest.raises(ValueError, match="'domains' has 3 values for 4 images"):
        ReIDImageDataset(items, _to_tensor, sample_fields={"domains": [0, 1, 2]})
    with pytest.raises(ValueError, match="'targets' would overwrite"):
        ReIDImageDataset(items, _to_tensor, sample_fields={"targets": [0, 1, 2, 3]})


def test_meta_arch_provider_is_used(items):
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

    from fastreid_clip.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "ClipBaseline"
    assert meta_arch_sample_fields(cfg, items) == {}

    @META_ARCH_REGISTRY.register()
    class _FieldProviderForTest(torch.nn.Module):
        @classmethod
        def train_sample_fields(cls, cfg, img_items):
            return {"first_letter": [path.rsplit("/", 1)[1][0] for path, _, _ in img_items]}

    try:
        cfg.MODEL.META_ARCHITECTURE = "_FieldProviderForTest"
        assert meta_arch_sample_fields(cfg, items) == {"first_letter": ["0", "1", "2", "3"]}
    finally:
        del META_ARCH_REGISTRY._obj_map["_FieldProviderForTest"]
