"""CLIP-FGDI training job for tests/engine/test_fgdi_ddp.py (run as a script, not collected).

    python fgdi_ddp_job.py OUT 2    # 2 gloo processes; python fgdi_ddp_job.py OUT 1: the same run in one process

One epoch of each of the stages id_prompt, domain_prompt (cached features) and image (images) on the tiny FGDI
config. Every training batch's ``domains`` is checked, on every rank, against the source of each sample's identity
read from its pid string (``synthetic_d<k>_...``, independent of the ``domains`` field) and, in the image stage,
against the source of each sample's image path. Each rank saves the counts of checked / wrong samples per stage,
its trainable parameters at the end of every stage and the final ones to OUT/rank<r>.pt.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from conftest import tiny_cfg  # noqa: E402

CONFIG = "configs/Synthetic/clip_fgdi_vit_tiny.yml"
STAGES = ("id_prompt", "domain_prompt", "image")
# 32 ids x 6 images. The image stage: no augmentation (each rank would draw its own), SGD (an update linear in the
# gradient), ID and triplet weights 0: the BN-neck's batch statistics and the batch-hard triplet are per rank under
# DDP (FastReID's / CLIP-ReID's behaviour), so only the per-sample i2tce + apn terms (and the prompt stages' global
# contrastive / domain losses) are the same computation in 1 and 2 processes.
OPTS = ["DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "2", "STAGES.NAMES", str(STAGES),
        "STAGES.IMAGE.SHARE_OPTIMIZER_WITH", "", "INPUT.FLIP.ENABLED", "False", "INPUT.PADDING.ENABLED", "False",
        "INPUT.REA.ENABLED", "False", "MODEL.LOSSES.CE.SCALE", "0.0", "MODEL.LOSSES.TRI.SCALE", "0.0",
        "STAGES.IMAGE.OPT", "SGD", "STAGES.IMAGE.BASE_LR", "0.01", "STAGES.IMAGE.WARMUP_EPOCHS", "0",
        "STAGES.IMAGE.STEPS", "[10]", "STAGES.IMAGE.IMS_PER_BATCH", "16", "STAGES.IMAGE.EVAL_PERIOD", "0",
        "STAGES.ID_PROMPT.IMS_PER_BATCH", "16", "STAGES.DOMAIN_PROMPT.IMS_PER_BATCH", "16",
        "STAGES.ID_PROMPT.WARMUP_EPOCHS", "0", "STAGES.DOMAIN_PROMPT.WARMUP_EPOCHS", "0",
        # Shuffled id_prompt minibatches: in the default fixed order (training-set order) every minibatch of this tiny
        # set holds one source, the domain head's CE gradients are then near zero and Adam's normalised step turns
        # their float rounding (1 vs 2 processes) into differences of 1e-3; the order itself is tested in
        # tests/data/test_sample_fields.py.
        "STAGES.ID_PROMPT.BATCH_ORDER", "shuffle"]
for _stage in ("ID_PROMPT", "DOMAIN_PROMPT"):  # a constant lr (a 1-epoch cosine would run at ETA_MIN_LR)
    OPTS += [f"STAGES.{_stage}.SCHED", "WarmupMultiStepEpochLR", f"STAGES.{_stage}.STEPS", "[10]"]
for _stage in STAGES:
    OPTS += [f"STAGES.{_stage.upper()}.EPOCHS", "1", f"STAGES.{_stage.upper()}.CHECKPOINT_PERIOD", "1"]


def job_cfg(output_dir: str):
    return tiny_cfg(output_dir, *OPTS, config=CONFIG)


def source_of_pid(pid: str) -> int:
    """``synthetic_d<k>_<n>`` -> k (the source index: DATASETS.NAMES lists SyntheticReIDDomain0..2 in order)."""
    return int(pid.split("_")[1][1:])


def install_domain_check(trainer):
    """Wrap the model's forward so that every training batch's ``domains`` is compared with its samples' sources."""
    model, train_set = trainer.raw_model, trainer.train_set
    label_source = torch.tensor([source_of_pid(pid) for pid in train_set.pids])  # label i = pids[i] (relabelling)
    path_source = {path: source_of_pid(pid) for path, pid, _ in train_set.img_items}
    counts = {}
    forward = model.forward

    def checked_forward(batch):
        if model.training and "domains" in batch:
            stage = model.stage
            domains = torch.as_tensor(batch["domains"]).cpu()
            expected = label_source[torch.as_tensor(batch["targets"]).cpu()]
            wrong = int((domains != expected).sum())
            if "img_paths" in batch:
                by_path = torch.tensor([path_source[p] for p in batch["img_paths"]])
                wrong += int((domains != by_path).sum())
            c = counts.setdefault(stage, {"batches": 0, "samples": 0, "wrong": 0, "domains": set()})
            c["batches"] += 1
            c["samples"] += len(domains)
            c["wrong"] += wrong
            c["domains"].update(domains.tolist())
        return forward(batch)

    model.forward = checked_forward
    return counts


def trainable_state(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()
            if k.startswith(("prompt_learner", "domain_prompt", "domain_head", "monitor_head", "backbone", "head"))}


def main(output_dir: str):
    from fastreid.engine import default_setup
    from fastreid.utils import comm

    from fastreid_clip.engine import ClipTrainer

    cfg = job_cfg(output_dir)
    cfg.freeze()
    default_setup(cfg, None)
    trainer = ClipTrainer(cfg)
    counts = install_domain_check(trainer)
    initial = trainable_state(trainer.raw_model)
    trainer.resume_or_load(resume=False)
    trainer.train()
    counts = {k: {**v, "domains": sorted(v["domains"])} for k, v in counts.items()}
    torch.save({"final": trainable_state(trainer.raw_model), "initial": initial, "counts": counts,
                "world_size": comm.get_world_size(), "iters": trainer.iter},
               os.path.join(output_dir, f"rank{comm.get_rank()}.pt"))


if __name__ == "__main__":
    import fastreid_clip  # noqa: F401
    from fastreid.engine import launch

    from fastreid_clip.data.build import build_dataset

    out, world = sys.argv[1], int(sys.argv[2])
    build_dataset(job_cfg(out), "SyntheticReID")  # generate the data once, before the workers start
    if world == 1:
        main(out)
    else:
        launch(main, world, num_machines=1, machine_rank=0, dist_url="auto", args=(out,))
