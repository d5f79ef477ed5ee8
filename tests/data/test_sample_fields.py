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


def test_fixed_batch_order_is_training_order_without_remainder():
    """STAGES.<NAME>.BATCH_ORDER fixed (CLIP-FGDI's prompt stages): rows in order, full batches only, every epoch
    the same; shuffle: a permutation per epoch with the remainder kept."""
    from fastreid_clip.data.epoch_data import FeatureEpochs

    feats, labels = torch.arange(22.0).view(11, 2), torch.arange(11)
    fixed = FeatureEpochs(feats, labels, 4, seed=3, order="fixed")
    for epoch in (0, 5):
        batches = fixed.epoch(epoch)
        assert [b["targets"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
        assert torch.equal(batches[1]["features"], feats[4:8])
    assert fixed.nominal_iters() == 2
    shuffled = FeatureEpochs(feats, labels, 4, seed=3)
    first, second = ([t for b in shuffled.epoch(e) for t in b["targets"].tolist()] for e in (0, 1))
    assert sorted(first) == list(range(11)) and first != second
    # two ranks: each takes its half of the same fixed global batch
    halves = [FeatureEpochs(feats, labels, 4, seed=3, rank=r, world_size=2, order="fixed").epoch(0)[0]["targets"]
              for r in (0, 1)]
    assert [h.tolist() for h in halves] == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="batch order"):
        FeatureEpochs(feats, labels, 4, seed=3, order="sorted")


def test_batch_order_key_is_checked():
    from fastreid_clip.config.stages import StageSpec
    from fastreid_clip.config.validate import ConfigValueError

    assert StageSpec(name="prompt", epochs=1, data="features", batch_order="fixed").batch_order == "fixed"
    with pytest.raises(ConfigValueError, match="STAGES.PROMPT.BATCH_ORDER"):
        StageSpec(name="prompt", epochs=1, data="features", batch_order="random")
    with pytest.raises(ConfigValueError, match="STAGES.IMAGE.BATCH_ORDER.*images stage"):
        StageSpec(name="image", epochs=1, data="images", batch_order="fixed")
