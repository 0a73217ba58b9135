"""Item content: which catalog fields make an item's text, and what turns a catalog into content vectors.

A `ContentRecipe` is saved with every model whose item vectors came from content (``content.json``, and
the `UnifiedSpace` in the subfolder ``space`` when one made them), so items added later — from any
reader's `Catalog` — get vectors made exactly the same way, from the library or the command line::

    recipe = ContentRecipe()                          # MiniLM on the default text fields
    model.set_content(recipe.embed(catalog), recipe=recipe)
    model.save_pretrained("out/model")                # writes content.json beside the weights
    Recommender.from_pretrained("out/model").add_items(new_catalog)   # embedded by the saved recipe

Text fields are named, never hard-coded per data set: ``title`` and ``text`` are the catalog's own
columns, any other name is an attribute column (absent attributes are left out, so a recipe made on H&M
still reads a catalog that has only titles and descriptions).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmrec.data import Catalog
from mmrec.io import atomic_write_json, inside, read_json

CONTENT_FILE = "content.json"
SPACE_FOLDER = "space"
# name. type. colour. pattern. section. description: H&M's reference text, and the default for any catalog.
DEFAULT_FIELDS = ("title", "product_type_name", "colour_group_name", "graphical_appearance_name", "section_name",
                  "text")


def item_texts(catalog: Catalog, fields: Sequence[str] = DEFAULT_FIELDS) -> list[str]:
    """Per item its ``fields`` joined with ". " (empty parts left out, a part's own trailing full stop not
    doubled, the last part kept as written)."""
    columns = []
    for name in fields:
        if name == "title":
            columns.append(catalog.titles)
        elif name == "text":
            columns.append(catalog.texts)
        elif name in catalog.attributes:
            columns.append(catalog.attributes[name])
    out = []
    for i in range(len(catalog)):
        parts = [str(col[i]).strip() for col in columns]
        parts = [p.rstrip(".").strip() for p in parts[:-1]] + parts[-1:]
        out.append(". ".join(p for p in parts if p))
    return out


@dataclass
class ContentRecipe:
    """How item content vectors are made: the text ``fields`` and the ``encoder`` (a spec such as
    ``"minilm"``, or ``"space"`` for the `UnifiedSpace` held in ``space``, which fuses photo and text).

    With ``photo_half`` and a ``space``, a vector is instead ``[text, photo]``: the ``encoder``'s text vector
    and the space's photo vector, each of unit length (zeros where an item has no photo). A model then
    compares the text half alone (`text_dims`; ``vae_fusion``'s ``similarity_dims``) and only its content
    generator reads the photo."""

    fields: tuple[str, ...] = DEFAULT_FIELDS
    encoder: str = "minilm"
    space: Any = field(default=None, repr=False, compare=False)
    photo_half: bool = False

    def __post_init__(self) -> None:
        self.fields = tuple(self.fields)
        if not self.fields or not all(isinstance(f, str) and f for f in self.fields):
            raise ValueError(f"ContentRecipe.fields must be non-empty field names, got {self.fields!r}")
        if not isinstance(self.photo_half, bool):
            raise ValueError(f"ContentRecipe.photo_half must be true or false, got {self.photo_half!r}")
        if self.photo_half and (self.space is None or "image" not in self.space.encoders):
            raise ValueError("ContentRecipe(photo_half=True) needs a UnifiedSpace with an image tower (space=...)")
        if self.space is not None and not self.photo_half:
            self.encoder = "space"
        elif self.encoder == "space":
            raise ValueError("ContentRecipe(photo_half=True): the text half needs a text encoder spec, not 'space'"
                             if self.photo_half else
                             "ContentRecipe(encoder='space') needs the UnifiedSpace itself (space=...)")
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ValueError(f"ContentRecipe.encoder must be an encoder spec, got {self.encoder!r}")

    def texts(self, catalog: Catalog) -> list[str]:
        """The text each item is embedded from."""
        return item_texts(catalog, self.fields)

    def embed(self, catalog: Catalog, *, cache: str | os.PathLike | None = None,
              progress: bool = False) -> np.ndarray:
        """``[len(catalog), C]`` float32 vectors, L2-normalised (with ``photo_half``, each half); an item with
        nothing to encode gets zeros."""
        from mmrec.fusion.cold_vae import normalize_rows

        texts = self.texts(catalog)
        if self.space is not None and not self.photo_half:
            vectors, _ = self.space.embed_items(catalog, texts=texts, cache=cache)
            return normalize_rows(vectors.detach().cpu().float().numpy())
        from mmrec.encoders import create_encoder, embed

        text = normalize_rows(embed(catalog, create_encoder(self.encoder), texts=texts, cache=cache,
                                    progress=progress).vectors)
        if not self.photo_half:
            return text
        photo, _ = self.space.embed_items(catalog, modalities=("image",))  # no photo: a zero row
        return np.concatenate([text, normalize_rows(photo.detach().cpu().float().numpy())], 1)

    def text_dims(self, vectors: np.ndarray) -> int:
        """How many leading columns of this recipe's ``vectors`` are the text (all of them unless
        ``photo_half``)."""
        return vectors.shape[1] - (self.space.config.dim if self.photo_half else 0)

    def embed_mmrec_folder(self, folder: str | os.PathLike, catalog: Catalog, *,
                           cache: str | os.PathLike | None = None) -> np.ndarray:
        """Vectors in the itemID order of an MMRec folder (``i_id_mapping.csv``) whose raw ids are ``catalog``
        ids (e.g. hm5core's article ids in the H&M catalog); an unmapped id is an error naming it."""
        from mmrec.datasets.mmrec_format import read_item_mapping

        raw = read_item_mapping(folder)
        missing = [i for i in raw if i not in catalog]
        if missing:
            raise KeyError(f"{len(missing)} item id(s) of {folder} are not in the catalog, e.g. {missing[:3]}")
        return self.embed(catalog.subset(catalog.index_of(raw)), cache=cache)

    # -- persistence: inside a model's folder ---------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> None:
        """Write ``content.json`` (and the space, in ``space/``) into a model folder being saved."""
        folder = Path(folder)
        if self.space is not None:
            self.space.save_pretrained(folder / SPACE_FOLDER)
        atomic_write_json(folder / CONTENT_FILE, {"fields": list(self.fields), "encoder": self.encoder,
                                                  **({"photo_half": True} if self.photo_half else {})})

    @classmethod
    def load(cls, folder: str | os.PathLike, encoder: str | None = None) -> "ContentRecipe | None":
        """The recipe saved in a (verified) model folder, or None where the model has none. The space is
        read from the folder's own ``space/`` only, and no path is taken from the file: an encoder saved as a
        local path (a library user's own ``hf:/models/...``) is refused unless the caller names the encoder,
        ``encoder`` (which replaces the saved text encoder)."""
        path = Path(folder) / CONTENT_FILE
        if not path.is_file():
            return None
        recipe = read_json(path)
        if not isinstance(recipe, dict) or not {"fields", "encoder"} <= set(recipe) <= {"fields", "encoder", "photo_half"} \
                or not isinstance(recipe["fields"], list):
            raise ValueError(f"{path}: expected {{'fields': [names], 'encoder': spec or 'space'[, 'photo_half': true]}}")
        photo_half = recipe.get("photo_half", False)
        if encoder is not None and recipe["encoder"] != "space":
            recipe["encoder"] = encoder
        elif isinstance(recipe["encoder"], str) and recipe["encoder"] != "space" and names_a_path(recipe["encoder"]):
            raise ValueError(f"{path}: the encoder {recipe['encoder']!r} is a local path, and a saved folder never "
                             f"points outside itself; if you trust it, name it when loading "
                             f"(from_pretrained(folder, content_encoder=...))")
        space = None
        if recipe["encoder"] == "space" or photo_half is True:
            from mmrec.space import UnifiedSpace

            space = UnifiedSpace.from_pretrained(inside(folder, SPACE_FOLDER, str(path)))
        try:
            return cls(tuple(recipe["fields"]), recipe["encoder"], space, photo_half)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def names_a_path(spec: str) -> bool:
    """Whether an encoder spec builds from the local file system (an architecture or weights given as a path)
    rather than from an alias or a hub name."""
    from mmrec.encoders.registry import ALIASES, parse_spec

    if spec.strip() in ALIASES:  # a name the package resolves (minilm: a pip package's own folder)
        return False
    parsed = parse_spec(spec)
    for part in (parsed.arch, parsed.weights or ""):
        if part.startswith(("/", "./", "../", "~")) or (part and os.path.exists(os.path.expanduser(part))):
            return True
    return False


def content_vectors(catalog: Catalog, encoder: Any = "minilm", *, fields: Sequence[str] = DEFAULT_FIELDS,
                    cache: str | os.PathLike | None = None, progress: bool = False) -> np.ndarray:
    """Shortcut: ``ContentRecipe(fields, encoder).embed(catalog)``; ``encoder`` is a spec or a UnifiedSpace."""
    return as_recipe(encoder, fields).embed(catalog, cache=cache, progress=progress)


def as_recipe(encoder: Any, fields: Sequence[str] = DEFAULT_FIELDS) -> ContentRecipe:
    """A recipe from an encoder spec or a `UnifiedSpace` (or a recipe, returned as is)."""
    from mmrec.space import UnifiedSpace

    if isinstance(encoder, ContentRecipe):
        return encoder
    if isinstance(encoder, str):
        return ContentRecipe(tuple(fields), encoder)
    if isinstance(encoder, UnifiedSpace):
        return ContentRecipe(tuple(fields), space=encoder)
    raise TypeError(f"content comes from an encoder spec or a UnifiedSpace, not {type(encoder).__name__}")
