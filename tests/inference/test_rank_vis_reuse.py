"""The ranked-list drawing shared by TEST.RANK_VIS, tools/search.py and tools/visualize_attention.py."""

import numpy as np
from PIL import Image

from inference_helpers import cached_run
from fastreid_clip.inference import FeatureExtractor
from fastreid_clip.utils.rank_vis import draw_ranked_rows, match_colour, save_ranked_retrievals


def test_save_ranked_retrievals_still_draws(datasets_root, tmp_path):
    run_dir, _ = cached_run("configs/Synthetic/clip_baseline_vit_tiny.yml")
    extractor = FeatureExtractor.from_run_dir(run_dir)
    path = save_ranked_retrievals(extractor.model, extractor.cfg, "SyntheticReID", str(tmp_path / "r.jpg"),
                                  num_queries=3, top_k=4)
    width, height = Image.open(path).size
    assert (width, height) == (5 * (64 + 6) + 18, 3 * (128 + 6) + 6)  # the layout TEST.RANK_VIS always had


def test_draw_ranked_rows_cells_and_frames(tmp_path):
    thumb = Image.fromarray(np.full((20, 10, 3), 255, np.uint8))
    rows = [[(thumb, match_colour(None)), (thumb, match_colour(True)), (thumb, match_colour(False))]]
    picture = np.asarray(Image.open(draw_ranked_rows(rows, str(tmp_path / "d.png"), thumb=(40, 20))))
    assert picture.shape == (40 + 12, 3 * 26 + 18, 3)
    left_green, left_red = 6 + 26 + 12, 6 + 2 * 26 + 12  # second and third cells (after the query's wider gap)
    assert tuple(picture[20, left_green - 2]) == (40, 170, 60) and tuple(picture[20, left_red - 2]) == (210, 40, 40)
    assert tuple(picture[20, 6 - 2]) == (128, 128, 128)
