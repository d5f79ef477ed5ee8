"""2-process gloo SVLL-ReID jobs for tests/engine/test_svll_ddp.py (run as a script, not collected).

    python svll_ddp_job.py OUT

Trains two configs in the same two processes and saves, per rank, OUT/<job>_rank<r>.pt:

* ``exact``: both stages with deterministic data (no flip / pad / erasing, unmasked prompts: ``MASK_RATE 0``) and
  without CLIP-ReID's per-rank stage-2 terms (ID and triplet weights 0), so that it must equal one process;
  SIE on (the main pass uses it, the two views do not), identity positives (labels gathered), SGD in stage 2.
* ``full``: the tiny SVLL-ReID config as shipped (random masks and augmentations), one epoch per stage.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from conftest import tiny_cfg  # noqa: E402

CONFIG = "configs/Synthetic/svll_reid_vit_tiny.yml"
# 16 training ids x 2 cameras x 2 images: 8 prompt minibatches of 16 (2 epochs), 2 PK batches of 8 ids x 4 images.
COMMON = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "16", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "4",
          "DATASETS.SYNTHETIC.CAMERAS_PER_ID", "2", "DATASETS.SYNTHETIC.IMAGES_PER_ID_CAMERA", "2",
          "STAGES.PROMPT.EPOCHS", "2", "STAGES.PROMPT.IMS_PER_BATCH", "16", "STAGES.IMAGE.EPOCHS", "1",
          "STAGES.IMAGE.EVAL_PERIOD", "0", "STAGES.IMAGE.WARMUP_EPOCHS", "0"]
JOBS = {
    "exact": COMMON + ["MODEL.SVLL.LSS.MASK_RATE", "0.0", "MODEL.SVLL.VSS.POSITIVES", "identity",
                       "MODEL.LOSSES.CE.SCALE", "0.0", "MODEL.LOSSES.TRI.SCALE", "0.0",
                       "INPUT.FLIP.ENABLED", "False", "INPUT.PADDING.ENABLED", "False", "INPUT.REA.ENABLED", "False",
                       "INPUT.VIEWS.REA.ENABLED", "False", "MODEL.BACKBONE.SIE_CAMERA", "True",
                       "STAGES.IMAGE.OPT", "SGD", "STAGES.IMAGE.BASE_LR", "0.01"],
    "full": COMMON + ["STAGES.PROMPT.EPOCHS", "1"],
}


def job_cfg(output_dir: str, job: str):
    return tiny_cfg(output_dir, *JOBS[job], config=CONFIG)


def train(output_dir: str, job: str):
    """Train ``job`` in ``output_dir``; return (trainer, initial parameters)."""
    from fastreid_clip.engine import ClipTrainer

    cfg = job_cfg(output_dir, job)
    cfg.freeze()
    trainer = ClipTrainer(cfg)
    initial = {k: v.detach().clone() for k, v in trainer.raw_model.named_parameters()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer, initial


def snapshot(trainer, initial):
    model = trainer.raw_model
    trained = {k for k, v in model.named_parameters() if v.requires_grad}
    trained |= {k for k, v in model.named_parameters() if k.startswith("prompt_learner.")}  # stage-1 parameters
    return {"params": {k: v.detach().clone() for k, v in model.named_parameters() if k in trained},
            "mlp_buffers": {k: v.clone() for k, v in model.named_buffers() if k.startswith("image_mlp.")},
            "initial": initial, "iters": trainer.iter}


def main(output_dir: str):
    from fastreid.engine import default_setup
    from fastreid.utils import comm

    for job in JOBS:
        out = os.path.join(output_dir, job)
        cfg = job_cfg(out, job)
        cfg.freeze()
        default_setup(cfg, None)
        trainer, initial = train(out, job)
        result = snapshot(trainer, initial)
        result["world_size"] = comm.get_world_size()
        torch.save(result, os.path.join(output_dir, f"{job}_rank{comm.get_rank()}.pt"))


if __name__ == "__main__":
    import fastreid_clip  # noqa: F401
    from fastreid.engine import launch

    from fastreid_clip.data.build import build_dataset

    out = sys.argv[1]
    build_dataset(job_cfg(out, "exact"), "SyntheticReID")  # generate the data once, before the workers start
    launch(main, 2, num_machines=1, machine_rank=0, dist_url="auto", args=(out,))
