"""Training windows of a grounding tower: drawn in worker processes, they are the same as drawn in one."""
from __future__ import annotations

import pytest
import torch

from mmrec.datasets.training_pages import TrainingPages
from mmrec.fusion.screen_tower import ScreenSpaceConfig
from mmrec.screen_windows import ScreenWindows


def test_windows_drawn_by_worker_processes_equal_those_drawn_in_one(tmp_path):
    from mmrec.datasets.synthetic import WorldConfig, make_world

    world = make_world(WorldConfig(seed=5, n_users=10, n_items=5, n_new_items=0, interactions_per_user=(2, 3),
                                   new_interactions_per_user=(0, 0), missing_image_fraction=0.2,
                                   missing_text_fraction=0.0), tmp_path / "world")
    args = (world.catalog, 3, 3, ScreenWindows(), 2, 1, (24, 16))
    one = TrainingPages(page_size=(120, 208), overlays=0.5, jpeg_share=0.5).windows(*args)
    two = TrainingPages(page_size=(120, 208), overlays=0.5, jpeg_share=0.5, workers=2).windows(*args)
    assert one[0].shape == (3 * 2 * 5, 3, 24, 16) and one[1].shape == (3 * 1 * 5, 3, 24, 16)
    assert one[0].float().std() > 0  # real pixels, not the zeros the tensors start as
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="workers"):
        TrainingPages(workers=0)
    assert ScreenSpaceConfig(render_workers=3).pages.workers == 3  # the recipe's setting reaches the drawing
    with pytest.raises(ValueError, match="render_workers"):
        ScreenSpaceConfig(render_workers=0)
