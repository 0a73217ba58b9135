"""Frozen pretrained towers behind one `Encoder` interface, the factory, and the embedding cache."""
