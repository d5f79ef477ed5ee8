"""CLIP-FGDI's config and data plumbing: SHARE_OPTIMIZER_WITH validation, MODEL.FGDI checks, per-source domain
labels, cached-feature minibatches carrying sample fields, and the synthetic per-domain sources."""

import pytest
import torch

from conftest import tiny_cfg
from fastreid_clip.config.stages import stage_specs
from fastreid_clip.config.validate import ConfigValueError, validate_train_config
from fastreid_clip.data.build import meta_arch_sample_fields, train_items
from fastreid_clip.data.epoch_data import FeatureEpochs

CONFIG = "configs/Synthetic/clip_fgdi_vit_tiny.yml"


def _cfg(*opts):
    return tiny_cfg("/tmp/unused", *opts, config=CONFIG)


def test_config_stages_and_shared_optimizer():
    specs = stage_specs(_cfg())
    assert [s.name for s in specs] == ["prior", "id_prompt", "domain_prompt", "image"]
    assert specs[3].share_optimizer_with == "prior" and specs[0].share_optimizer_with == ""
    assert [s.data for s in specs] == ["images", "features", "features", "images"]


@pytest.mark.parametrize("opts,key,text", [
    (["STAGES.IMAGE.SHARE_OPTIMIZER_WITH", "nothing"], "STAGES.IMAGE.SHARE_OPTIMIZER_WITH", "earlier stage"),
    (["STAGES.PRIOR.SHARE_OPTIMIZER_WITH", "image"], "STAGES.PRIOR.SHARE_OPTIMIZER_WITH", "earlier stage"),
    (["STAGES.IMAGE.SHARE_OPTIMIZER_WITH", "image"], "STAGES.IMAGE.SHARE_OPTIMIZER_WITH", "earlier stage"),
    (["STAGES.IMAGE.TRAINABLE", "('backbone',)"], "STAGES.IMAGE.TRAINABLE", "TRAINABLE of stage 'prior'"),
    (["MODEL.FGDI.APN.MODE", "cosine"], "MODEL.FGDI.APN.MODE", "code_cs_softplus"),
    (["MODEL.FGDI.BETA", "1.5"], "MODEL.FGDI.BETA", "[0, 1]"),
    (["MODEL.FGDI.GRL_STRENGTH", "-0.1"], "MODEL.FGDI.GRL_STRENGTH", ">= 0"),
    (["MODEL.FGDI.NUM_DOMAINS", "2"], "MODEL.FGDI.NUM_DOMAINS", "len(DATASETS.NAMES) = 3"),
    (["STAGES.NAMES", "('id_prompt', 'prior', 'domain_prompt', 'image')"], "STAGES.NAMES", "order"),
    (["STAGES.NAMES", "('prior', 'prompt')"], "STAGES.NAMES", "'prompt' is not one"),
    (["DG.SPLITS", "all"], "DG.SPLITS", "single9"),
    (["DG.SPLIT_ID", "10"], "DG.SPLIT_ID", "0..9"),
    (["INPUT.PIPELINE", "augmix"], "INPUT.PIPELINE", "'fgdi'"),
])
def test_bad_values_name_their_key(opts, key, text):
    with pytest.raises(ConfigValueError) as err:
        validate_train_config(_cfg(*opts))
    assert err.value.key == key and text in str(err.value)


def test_train_items_sources_and_domain_field(datasets_root):
    cfg = _cfg("DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "2")
    items, sources = train_items(cfg, with_sources=True)
    assert train_items(cfg) == items  # the plain call is unchanged
    assert len(sources) == len(items) and sorted(set(sources)) == [0, 1, 2]
    fields = meta_arch_sample_fields(cfg, items, sources)
    assert torch.equal(fields["domains"], torch.tensor(sources))
    assert torch.equal(meta_arch_sample_fields(cfg, items)["domains"], fields["domains"])  # computed when missing
    # sources hold distinct identities (each synthetic domain's own), prefixed by the view's name
    pids = {}
    for (_, pid, _), source in zip(items, sources):
        assert pid.startswith(f"synthetic_d{source}_")
        pids.setdefault(pid.split("_")[-1], set()).add(source)
    assert all(len(s) == 1 for s in pids.values())


def test_domain_views_cover_the_training_split(datasets_root):
    from fastreid_clip.data.build import build_dataset

    cfg = _cfg("DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "2")
    base = build_dataset(cfg, "SyntheticReID")
    views = [build_dataset(cfg, f"SyntheticReIDDomain{k}") for k in range(4)]
    assert sorted(p for v in views for p, _, _ in v.train) == sorted(p for p, _, _ in base.train)
    assert views[3].train == [] and views[3].query  # domain 3 is held out: only test identities
    assert all(base.domains[p] == k for k, v in enumerate(views) for p, _, _ in v.train)
    cfg.defrost()
    cfg.DATASETS.SYNTHETIC.NUM_DOMAINS = 2
    cfg.DATASETS.SYNTHETIC.TRAIN_DOMAINS = (0, 1)
    cfg.DATASETS.SYNTHETIC.TEST_DOMAINS = (1,)
    with pytest.raises(ValueError, match="NUM_DOMAINS = 2"):
        build_dataset(cfg, "SyntheticReIDDomain2")


def test_feature_epochs_carry_sample_fields():
    feats = torch.arange(10.0).unsqueeze(1)
    labels = torch.arange(10) % 3
    fields = {"domains": torch.arange(10) + 100, "names": [f"n{i}" for i in range(10)]}
    data = FeatureEpochs(feats, labels, 4, seed=1, fields=fields)
    for batch in data.epoch(0):
        rows = batch["features"][:, 0].long()
        assert torch.equal(batch["domains"], rows + 100) and batch["names"] == [f"n{int(r)}" for r in rows]
        assert torch.equal(batch["targets"], rows % 3)
    with pytest.raises(ValueError, match="3 values for 10"):
        FeatureEpochs(feats, labels, 4, seed=1, fields={"domains": torch.zeros(3)})
    with pytest.raises(ValueError, match="overwrite"):
        FeatureEpochs(feats, labels, 4, seed=1, fields={"targets": torch.zeros(10)})
