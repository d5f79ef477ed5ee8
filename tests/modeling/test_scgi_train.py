"""CLIP-SCGI with captions from the synthetic data: the caption-embedding cache gives the training losses of encoding
the captions on the fly, and the tiny synthetic config trains end to end (shipped synthetic CLIP weights, CPU)."""


import pytest
import torch
from fastreid.modeling.meta_arch import build_model

from conftest import reload_final_checkpoint, tiny_cfg
from fastreid_clip.data.build import build_clip_train_set, train_items
from fastreid_clip.engine import ClipTrainer
from fastreid_clip.engine.caption_cache import caption_sample_fields, encode_captions
from numeric import assert_close_ulps

CONFIG = "configs/Synthetic/clip_scgi_vit_tiny.yml"


def _cfg(out="unused", *opts):
    return tiny_cfg(out, *opts, config=CONFIG)


def test_cache_gives_the_losses_of_encoding_captions_on_the_fly(datasets_root):
    cached_cfg = _cfg()
    fly_cfg = _cfg("unused", "CAPTIONS.CACHE", "False")
    items = train_items(cached_cfg)
    cached = caption_sample_fields(cached_cfg, items)["caption_embeds"]
    tokens = caption_sample_fields(fly_cfg, items)["caption_tokens"]
    assert cached.shape == (len(items), 32) and tokens.shape == (len(items), 77)
    assert cached.dtype == torch.float32
    # Captions are per identity on the synthetic data: images of one identity share the embedding.
    assert torch.equal(cached[0], cached[1]) and not torch.equal(cached[0], cached[-1])

    train_set = build_clip_train_set(cached_cfg)  # through the meta-arch's train_sample_fields
    index = [0, 5, 17, 40, 41, 60, 77, 90]
    torch.testing.assert_close(torch.stack([train_set[i]["caption_embeds"] for i in index]), cached[index])

    for cfg_cls in (fly_cfg, cached_cfg):
        cfg_cls.defrost()
        cfg_cls.MODEL.HEADS.NUM_CLASSES = 32
    torch.manual_seed(0)
    fly = build_model(fly_cfg)  # keeps the token table to encode captions per iteration
    torch.manual_seed(0)
    model = build_model(cached_cfg)
    assert fly.text_encoder.token_embedding is not None and model.text_encoder.token_embedding is None
    g = torch.Generator().manual_seed(0)
    batch = {"images": torch.rand(8, 3, 256, 128, generator=g) * 255,
             "targets": torch.tensor([train_set[i]["targets"] for i in index]),
             "camids": torch.zeros(8, dtype=torch.long)}
    fly.train()
    model.train()
    on_the_fly = fly({**batch, "caption_tokens": tokens[index]})
    from_cache = model({**batch, "caption_embeds": cached[index]})
    assert set(on_the_fly) == set(from_cache) == {"loss_id", "loss_triplet", "loss_i2t", "loss_t2i"}
    for key in on_the_fly:  # the cache batches captions differently (padding): equal up to rounding
        assert_close_ulps(from_cache[key], on_the_fly[key], 64)
    # The model's own text encoder gives the cached embeddings.
    assert_close_ulps(fly.caption_features({"caption_tokens": tokens[index]}), cached[index], 64)


def test_encode_captions_deduplicates_and_keeps_order():
    cfg = _cfg("unused", "CAPTIONS.CACHE", "False", "MODEL.HEADS.NUM_CLASSES", "4")
    model = build_model(cfg)
    texts = ["a man", "a woman in red", "a man", "a child"]
    calls = []
    original = model.text_encoder.forward

    def counting(tokens):
        calls.append(tokens.shape[0])
        return original(tokens)

    model.text_encoder.forward = counting
    out = encode_captions(texts, model.text_encoder, torch.device("cpu"), batch_size=2)
    assert sum(calls) == 3 and calls == [2, 1]  # 3 distinct captions, batches of 2
    assert torch.equal(out[0], out[2])
    model.text_encoder.forward = original
    assert_close_ulps(out, model.text_encoder(model.text_encoder.tokenize(texts)), 64)


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("clip_scgi"))
    cfg = tiny_cfg(out, "SOLVER.MAX_EPOCH", "8", "SOLVER.STEPS", "[6]", "SOLVER.WARMUP_EPOCHS", "2",
                   "TEST.EVAL_PERIOD", "8", "TEST.EVAL_INIT", "True", "SOLVER.CHECKPOINT_PERIOD", "8", config=CONFIG)
    cfg.freeze()
    trainer = ClipTrainer(cfg)
    trainer.resume_or_load(resume=False)
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    final = trainer.train()
    return trainer, before, trainer.init_eval_results, final


def _metrics(results):
    return results.get("SyntheticReID", results)


def test_tiny_synthetic_config_trains_end_to_end(trained):
    trainer, before, init, final = trained
    init, final = _metrics(init), _metrics(final)
    print(f"synthetic tiny CLIP-SCGI, 32 ids, 8 epochs: mAP {init['mAP']:.1f} -> {final['mAP']:.1f}, "
          f"R1 {init['Rank-1']:.1f} -> {final['Rank-1']:.1f}")
    model = trainer.raw_model
    after = model.state_dict()
    assert not torch.equal(before["inversion.queries"], after["inversion.queries"])
    assert not torch.equal(before["backbone.visual.conv1.weight"], after["backbone.visual.conv1.weight"])
    text = [k for k in after if k.startswith("text_encoder.")]
    assert text and all(torch.equal(before[k], after[k]) for k in text)  # frozen
    assert final["mAP"] > init["mAP"]


def test_checkpoint_evaluates_without_clip_weights_or_captions(trained):
    fresh, model = reload_final_checkpoint(trained[0])
    batch = {"images": torch.rand(3, 3, 256, 128) * 255, "camids": torch.tensor([0, 1, 2])}
    with torch.no_grad():
        assert torch.equal(fresh(batch), model(batch))
