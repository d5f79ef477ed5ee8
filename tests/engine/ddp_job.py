"""A 2-process gloo training job for tests/engine/test_distributed.py (run as a script, not collected)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from conftest import tiny_cfg  # noqa: E402


def main(output_dir: str):
    from fastreid.engine import default_setup
    from fastreid.utils import comm
    from fastreid.utils.env import seed_all_rng

    from fastreid_clip.engine import ClipTrainer

    cfg = tiny_cfg(output_dir, "SOLVER.MAX_EPOCH", "2", "SOLVER.IMS_PER_BATCH", "32", "TEST.EVAL_PERIOD", "2")
    cfg.freeze()
    default_setup(cfg, None)
    seed_all_rng(cfg.SEED + comm.get_rank())  # different init on each rank: DDP must broadcast rank 0's
    trainer = ClipTrainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.model.module
    initial = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}  # after DDP's broadcast from rank 0
    trainer.train()
    params = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    torch.save({"params": params, "initial": initial, "world_size": comm.get_world_size(), "iters": trainer.iter},
               os.path.join(output_dir, f"rank{comm.get_rank()}.pt"))


if __name__ == "__main__":
    import fastreid_clip  # noqa: F401
    from fastreid.engine import launch

    from fastreid_clip.data.build import build_dataset

    out = sys.argv[1]
    build_dataset(tiny_cfg(out), "SyntheticReID")  # generate the data once, before the workers start
    launch(main, 2, num_machines=1, machine_rank=0, dist_url="auto", args=(out,))
