"""Moved: the grounding-space recipe is `mmrec.fusion.screen_tower`, its training pages
`mmrec.datasets.training_pages`. Kept as a re-export for callers that still import it from here."""
from mmrec.fusion.screen_tower import ScreenSpaceConfig, fitted_windows, train_screen_space, training_photo_boxes

__all__ = ["ScreenSpaceConfig", "fitted_windows", "train_screen_space", "training_photo_boxes"]
