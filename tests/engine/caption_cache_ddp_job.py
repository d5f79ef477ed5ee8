"""CLIP-SCGI caption-cache job for tests/engine/test_caption_cache_ddp.py (run as a script, not collected).

    python caption_cache_ddp_job.py OUT 2    # the cache sharded over 2 gloo processes; ... OUT 1: one process

Each rank computes the caption embeddings of the training items (``caption_sample_fields``, what
``ClipSCGI.train_sample_fields`` returns) and saves them with the items' paths and the shard of distinct captions
it encoded to OUT/rank<r>.pt.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from conftest import tiny_cfg  # noqa: E402

CONFIG = "configs/Synthetic/clip_scgi_vit_tiny.yml"
# 31 identities: 31 distinct captions (one per identity on the synthetic data), so the shards are uneven (16 + 15);
# batches of 3 captions: several encoder batches per shard, whose boundaries differ from the single-process ones.
OPTS = ["DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "31", "CAPTIONS.BATCH_SIZE", "3"]


def job_cfg(output_dir: str):
    return tiny_cfg(output_dir, *OPTS, config=CONFIG)


def main(output_dir: str):
    from fastreid.utils import comm

    from fastreid_clip.data.build import train_items
    from fastreid_clip.engine import caption_cache

    shards = []
    original = caption_cache._shard

    def recording_shard(n, rank, world):
        shards.append((n, rank, world, list(original(n, rank, world))))
        return original(n, rank, world)

    caption_cache._shard = recording_shard
    cfg = job_cfg(output_dir)
    items = train_items(cfg)
    embeds = caption_cache.caption_sample_fields(cfg, items)["caption_embeds"]
    torch.save({"embeds": embeds, "paths": [p for p, _, _ in items], "shards": shards,
                "world_size": comm.get_world_size()}, os.path.join(output_dir, f"rank{comm.get_rank()}.pt"))


if __name__ == "__main__":
    import fastreid_clip  # noqa: F401
    from fastreid.engine import launch

    from fastreid_clip.data.build import build_dataset
    from fastreid_clip.data.captions import load_train_captions

    out, world = sys.argv[1], int(sys.argv[2])
    cfg = job_cfg(out)
    build_dataset(cfg, "SyntheticReID")  # generate the data once, before the workers start
    from fastreid_clip.data.build import train_items

    load_train_captions(cfg, train_items(cfg))  # ... and the caption file (CAPTIONS.GENERATE attributes)
    if world == 1:
        main(out)
    else:
        launch(main, world, num_machines=1, machine_rank=0, dist_url="auto", args=(out,))
