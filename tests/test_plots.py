"""The model's own bird's-eye map (the "cognitive map" in infer / eval plots): token colours and layout read-out."""

import numpy as np
import torch

from loc3r import geometry
from loc3r.evaluate.plots import draw_prediction, token_colors
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Collator
from loc3r.model.tokenizer import build_tiny_tokenizer
from tests.test_collate import WORDS, make_samples


def test_token_colors_are_the_mean_of_each_tokens_pixels():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 76, 76, 3), dtype=np.uint8)
    grid, extent = (4, 4), 72 / 76  # 9x9 patches of 8 px: 72 of 76 px covered
    got = token_colors(frames, grid, extent)
    cell = geometry.token_cell_index(76, 76, grid, extent)
    for t in range(2):
        for k in range(16):
            np.testing.assert_allclose(got[t, k], frames[t][cell == k].mean(0) / 255.0, rtol=1e-12)


def test_predicted_map_is_the_layout_head_on_the_prompt(tmp_path):
    torch.manual_seed(0)
    config = Loc3RConfig.tiny(num_frames=2)
    model = Loc3R(config, build_tiny_tokenizer(WORDS)).eval()
    samples = make_samples(config, 2)
    with torch.no_grad():
        trained = model(Collator(model.tokenizer, config)(samples)).layout.mu  # [B, T, n, 2]: causal, so the
    predictions = model.predict(Collator(model.tokenizer, config, for_generation=True)(samples), 2)  # answer is moot
    for b, p in enumerate(predictions):
        assert p.layout_xy.shape == (2, config.tokens_per_frame, 2)
        np.testing.assert_allclose(p.layout_xy, trained[b].numpy(), atol=1e-5)
    out = tmp_path / "map.png"
    colors = token_colors(samples[0].frames, config.frame_grid, config.frame_grid_extent)
    draw_prediction(trajectory=samples[0].camera_poses_bev[:, :2, 3], pred_xy=np.zeros(2), pred_sigma=np.ones(2),
                    pred_yaw=0.0, yaw_probs=np.full(36, 1 / 36), out=out,
                    map_xy=predictions[0].layout_xy.reshape(-1, 2), map_colors=colors.reshape(-1, 3))
    assert out.stat().st_size > 0
