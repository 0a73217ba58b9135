"""mmrec: a multimodal recommendation toolkit.

Item photos, app screenshots, text and purchase history land in one latent space; every recommender
reads from it. The subpackages ``mmrec.encoders``, ``mmrec.fusion`` and ``mmrec.datasets`` live in the
top-level folders ``encoders/``, ``fusion/`` and ``datasets/`` of the source tree.
"""
from mmrec.data import KINDS, Catalog, Interactions

__version__ = "0.1.0"
__all__ = ["KINDS", "Catalog", "Interactions", "__version__"]
