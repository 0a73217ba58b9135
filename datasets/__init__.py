"""Readers for real data sets, shard writers and readers, screen sources and the synthetic world."""
