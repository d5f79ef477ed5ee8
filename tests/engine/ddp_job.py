"""2-process gloo training jobs for tests/engine/test_distributed.py (run as a script, not collected).

    python ddp_job.py OUT baseline   # the CLIP baseline (image stage) for 2 epochs
    python ddp_job.py OUT prompt     # CLIP-ReID's prompt stage only (cached features, global-batch SupCon)
Each rank saves its trainable parameters to OUT/rank<r>.pt.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from conftest import tiny_cfg  # noqa: E402

JOBS = {
    "baseline": ("configs/Synthetic/clip_baseline_vit_tiny.yml",
                 ["SOLVER.MAX_EPOCH", "2", "SOLVER.IMS_PER_BATCH", "32", "TEST.EVAL_PERIOD", "0"]),
    "prompt": ("configs/Synthetic/clip_reid_vit_tiny.yml",
               ["STAGES.NAMES", '("prompt",)', "STAGES.PROMPT.EPOCHS", "3", "STAGES.PROMPT.IMS_PER_BATCH", "16"]),
}


def job_cfg(output_dir: str, job: str):
    config, opts = JOBS[job]
    return tiny_cfg(output_dir, *opts, config=config)


def main(output_dir: str, job: str):
    from fastreid.engine import default_setup
    from fastreid.utils import comm

    from fastreid_clip.engine import ClipTrainer

    cfg = job_cfg(output_dir, job)
    cfg.freeze()
    default_setup(cfg, None)
    trainer = ClipTrainer(cfg)  # seeds SEED + rank: every rank starts from different weights until DDP broadcasts
    initial = {k: v.detach().clone() for k, v in trainer.raw_model.named_parameters()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.raw_model
    params = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    torch.save({"params": params, "initial": initial, "world_size": comm.get_world_size(), "iters": trainer.iter},
               os.path.join(output_dir, f"rank{comm.get_rank()}.pt"))


if __name__ == "__main__":
    import fastreid_clip  # noqa: F401
    from fastreid.engine import launch

    from fastreid_clip.data.build import build_dataset

    out, job = sys.argv[1], sys.argv[2]
    build_dataset(job_cfg(out, job), "SyntheticReID")  # generate the data once, before the workers start
    launch(main, 2, num_machines=1, machine_rank=0, dist_url="auto", args=(out, job))
