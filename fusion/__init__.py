"""Models that learn to combine: adapters, alignment objectives, recommenders and baselines."""
