"""Frozen pretrained towers behind one `Encoder` interface, the factory, catalog embedding and the cache.

Build a tower from a spec with an explicit source and embed a catalog::

    from mmrec.encoders import create_encoder, embed
    text = create_encoder("minilm")                                   # offline all-MiniLM-L6-v2
    image = create_encoder("openclip:ViT-B-32@/path/open_clip_model.safetensors")
    result = embed(catalog, image, cache="runs/embed-cache")          # vectors, valid mask, counts
"""
from mmrec.encoders.base import (MODALITIES, Encoder, EncoderSourceError, ImageEncoder, Preprocess, TextEncoder,
                                 TextPreprocess)
from mmrec.encoders.cache import EmbeddingCache, hash_bytes, hash_text
from mmrec.encoders.embed import EmbedResult, embed, embed_images, embed_texts
from mmrec.encoders.images import ImageDecodeError, decode_image, load_image
from mmrec.encoders.registry import EncoderSpec, create_encoder, families, parse_spec, register
from mmrec.encoders.screenshot import ScreenshotEncoder, TilePool, tile_grid

__all__ = [
    "MODALITIES", "Encoder", "EncoderSourceError", "ImageEncoder", "Preprocess", "TextEncoder", "TextPreprocess",
    "EmbeddingCache", "hash_bytes", "hash_text", "EmbedResult", "embed", "embed_images", "embed_texts",
    "ImageDecodeError", "decode_image", "load_image", "EncoderSpec", "create_encoder", "families", "parse_spec",
    "register", "ScreenshotEncoder", "TilePool", "tile_grid",
]
