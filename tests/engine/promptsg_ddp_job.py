"""2-process gloo PromptSG training job for tests/engine/test_promptsg_ddp.py (run as a script, not collected).

    python promptsg_ddp_job.py OUT     # a few PromptSG iterations; each rank saves its weights to OUT/rank<r>.pt
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from conftest import tiny_cfg  # noqa: E402

CONFIG = "configs/Synthetic/promptsg_vit_tiny.yml"
# 8 ids x 9 images -> 4 PK batches of 4 ids x 4 images per epoch. No augmentation: a 2-process run sees exactly the
# images of the single-process run (each rank draws its own augmentations). SGD, whose update is linear in the
# gradient, so the comparison measures the gradients rather than Adam's normalised steps (lr 1e-3, 1e-2 for the new
# modules: larger steps make the tiny model's activations blow up, which amplifies rounding differences).
OPTS = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "SOLVER.MAX_EPOCH", "2", "SOLVER.IMS_PER_BATCH", "16",
        "SOLVER.WARMUP_EPOCHS", "0", "SOLVER.STEPS", "[10]", "SOLVER.OPT", "SGD", "SOLVER.BASE_LR", "0.001",
        "INPUT.FLIP.ENABLED", "False", "INPUT.PADDING.ENABLED", "False", "INPUT.REA.ENABLED", "False",
        "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "0"]


def job_cfg(output_dir: str):
    return tiny_cfg(output_dir, *OPTS, config=CONFIG)


def state_of(model):
    """Trainable parameters and the BatchNorm running statistics."""
    out = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    out.update({k: v.detach().clone() for k, v in model.named_buffers() if "running" in k})
    return out


def main(output_dir: str):
    from fastreid.engine import default_setup
    from fastreid.utils import comm

    from fastreid_clip.engine import ClipTrainer

    cfg = job_cfg(output_dir)
    cfg.freeze()
    default_setup(cfg, None)
    trainer = ClipTrainer(cfg)
    initial = state_of(trainer.raw_model)
    trainer.resume_or_load(resume=False)
    trainer.train()
    torch.save({"state": state_of(trainer.raw_model), "initial": initial, "world_size": comm.get_world_size(),
                "iters": trainer.iter}, os.path.join(output_dir, f"rank{comm.get_rank()}.pt"))


if __name__ == "__main__":
    import fastreid_clip  # noqa: F401
    from fastreid.engine import launch

    from fastreid_clip.data.build import build_dataset

    out = sys.argv[1]
    build_dataset(job_cfg(out), "SyntheticReID")  # generate the data once, before the workers start
    launch(main, 2, num_machines=1, machine_rank=0, dist_url="auto", args=(out,))
