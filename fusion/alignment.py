"""Alignment in the library: training data, the hold-out by group, the retrieval validator, and `align`,
which fits a `UnifiedSpace` through the one training loop (its `training_step`, the objective in
`mmrec.fusion.clip_losses`).

`CatalogPairs` holds, per catalog item, the pixels of its photo already resized to the image tower's input
size (uint8, decoded once — decoding, not the model, is the cost on a CPU) and the outputs of the frozen
towers (e.g. locked MiniLM text features, computed once and cached). A batch is a dict in the form
`UnifiedSpace.training_step` reads. For catalogs too large for memory, `mmrec.fusion.shard_pairs.ShardPairs`
streams the same batches from catalog shards.

`split_by_group` holds items out by group (e.g. a product's colour variants never straddle splits);
`RetrievalValidator` scores a space on held-out batches (text→image Recall@K and the like) as ``evaluate_fn``
of `align`; `space_vectors` embeds batches' rows. `mmrec train align` and the benchmarks use these.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmrec.data import Catalog
from mmrec.space import UnifiedSpace
from mmrec.train import TrainConfig, TrainResult, fit

log = logging.getLogger(__name__)


def decode_resized(paths: Sequence[Any], preprocess, *, progress: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 ``[N, 3, H, W]`` images (paths, or PIL images already in memory) resized to ``preprocess.size``
    and a mask of rows that decoded.

    Missing (None) and broken images are counted and logged, and their rows stay zero with mask False.
    """
    from PIL import Image

    from mmrec.encoders import ImageDecodeError, load_image
    from mmrec.encoders.base import pil_to_tensor

    h, w = preprocess.size
    out = torch.zeros(len(paths), 3, h, w, dtype=torch.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    failures = 0
    for i, path in enumerate(paths):
        if path is None:
            continue
        try:
            image = path.convert("RGB") if isinstance(path, Image.Image) else load_image(path, draft_size=(w, h))
        except ImageDecodeError as err:
            failures += 1
            if failures <= 5:
                log.warning("skipping image: %s", err)
            continue
        resized = preprocess.resize(pil_to_tensor(image))
        out[i] = (resized[0] * 255).round().to(torch.uint8)
        ok[i] = True
    if failures:
        log.warning("%d of %d images could not be decoded and were skipped", failures, len(paths))
    return out, ok


class CatalogPairs(Dataset):
    """Per-item training inputs for a `UnifiedSpace`: pixels for trainable towers, features for frozen ones,
    vectors for tower-less modalities (e.g. a warm model's item ID embeddings as ``behaviour``).

    Each input is ``(values, mask)`` over the same items; the mask marks items that have the modality. An
    item is a training row when at least one of ``pairs`` (``"a-b"``) has both of its modalities; a batch
    carries ``"<modality>:mask"`` wherever some rows lack the modality, and each pair's loss uses only
    the rows that have both sides. ``augment[modality]`` (e.g. `mmrec.fusion.augment.ScreenAugment`) maps
    a uint8 pixel batch to float ``[0, 1]`` with random changes before it is normalised (training batches).
    ``unpaired``: rows with one side of a pair are training rows too (negatives, with
    `mmrec.space.SpaceConfig.unpaired_negatives`).
    """

    def __init__(self, pixels: dict[str, tuple[torch.Tensor, np.ndarray]],
                 features: dict[str, tuple[torch.Tensor, np.ndarray]], normalize: dict[str, Callable],
                 vectors: dict[str, tuple[torch.Tensor, np.ndarray]] | None = None,
                 pairs: Sequence[str] | None = None,
                 augment: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                 unpaired: bool = False) -> None:
        self.pixels, self.features, self.vectors = pixels, features, dict(vectors or {})
        self.augment = dict(augment or {})
        if set(self.augment) - set(pixels):
            raise ValueError(f"augment names {sorted(set(self.augment) - set(pixels))}, which have no pixels "
                             f"(pixel modalities: {sorted(pixels)})")
        self.normalize = normalize
        inputs = {**pixels, **features, **self.vectors}
        sizes = {len(values) for values, _ in inputs.values()}
        if len(sizes) != 1:
            raise ValueError(f"all modalities need the same number of items, got sizes {sorted(sizes)}")
        self.n = sizes.pop()
        self.masks = {m: np.asarray(mask, dtype=bool) for m, (_, mask) in inputs.items()}
        pairs = list(pairs) if pairs is not None else ["-".join(inputs)]
        usable = np.zeros(self.n, dtype=bool)
        for pair in pairs:
            a, _, b = pair.partition("-")
            if a in inputs and b in inputs:
                usable |= (self.masks[a] | self.masks[b]) if unpaired else (self.masks[a] & self.masks[b])
        self.rows = np.flatnonzero(usable)
        if not len(self.rows):
            raise ValueError(f"no item has both modalities of any pair in {pairs}")

    @classmethod
    def from_catalog(cls, space: UnifiedSpace, catalog: Catalog, *, texts: Sequence[str] | None = None,
                     cache: str | None = None,
                     vectors: dict[str, tuple[torch.Tensor, np.ndarray]] | None = None,
                     renderers: dict[str, Callable[[int], Any]] | None = None) -> "CatalogPairs":
        """Decode photos for trainable image towers, embed the rest with their frozen towers.

        ``vectors`` gives the inputs of tower-less modalities (``[len(catalog), input_dim]`` and a mask);
        ``renderers[modality](code)`` makes that modality's image of an item instead of its photo (e.g.
        a product page for the ``screen`` tower; None when the item has none).
        """
        from mmrec.encoders import embed

        pixels, features, normalize = {}, {}, {}
        renderers = renderers or {}
        for modality, encoder in space.encoders.items():
            if modality in space.towers:
                sources = catalog.image_paths
                if modality in renderers:
                    sources = _Rendered(renderers[modality], len(catalog))
                pixels[modality] = decode_resized(sources, encoder.preprocess)
                normalize[modality] = encoder.preprocess.normalize
            elif modality in renderers:
                features[modality] = _encode_rendered(encoder, renderers[modality], len(catalog))
            else:
                result = embed(catalog, encoder, texts=texts if modality == "text" else None, cache=cache,
                               progress=False)
                features[modality] = (torch.as_tensor(result.vectors), result.valid)
        for modality, (values, mask) in (vectors or {}).items():
            if modality not in space.adapters or modality in space.encoders:
                raise ValueError(f"vectors for {modality!r}: the space has no tower-less modality of that name")
            if len(values) != len(catalog):
                raise ValueError(f"vectors for {modality!r} have {len(values)} rows, the catalog {len(catalog)}")
        return cls(pixels, features, normalize, vectors, pairs=space.config.pairs)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> int:
        return int(self.rows[index])

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """One training batch dict: normalised float pixels (augmented where ``augment`` says), feature and
        vector rows, and the masks of modalities some training row lacks, gathered by index."""
        return self._batch(rows, train=True)

    def batches(self, rows: Sequence[int], batch_size: int = 512) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``rows`` (any items, e.g. held-out ones) in the training form, without augmentation and
        with every modality's mask: what a validation or `space_vectors` embeds."""
        rows = [int(r) for r in rows]
        for start in range(0, len(rows), batch_size):
            yield self._batch(rows[start:start + batch_size], train=False)

    def _batch(self, rows: list[int], train: bool) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(rows, dtype=torch.long)
        batch = {}
        for modality, (images, _) in self.pixels.items():
            augment = self.augment.get(modality) if train else None
            pixels = augment(images[idx]) if augment is not None else images[idx].float().div_(255)
            batch[f"{modality}:pixels"] = self.normalize[modality](pixels)
        for modality, (values, _) in self.features.items():
            batch[f"{modality}:features"] = values[idx]
        for modality, (values, _) in self.vectors.items():
            batch[f"{modality}:vectors"] = torch.as_tensor(values)[idx].float()
        for modality, mask in self.masks.items():
            if not train or not mask[self.rows].all():
                batch[f"{modality}:mask"] = torch.as_tensor(mask[idx.numpy()])
        return batch


def product_pages(catalog: Catalog, *, size: tuple[int, int] = (180, 320), seed: int = 0) -> Callable[[int], Any]:
    """A renderer for `CatalogPairs.from_catalog`: item code → that item's app product page (photo, title,
    price when the catalog has a ``price`` attribute, description), drawn by
    `mmrec.datasets.screens.render_product_page` with a per-item layout seed (``seed + code``).
    An item whose photo is missing or broken gets a page with the placeholder."""
    from mmrec.datasets.screens import render_product_page
    from mmrec.encoders import ImageDecodeError, load_image

    prices = catalog.attributes.get("price")

    def render(code: int) -> Any:
        photo = None
        if catalog.image_paths[code] is not None:
            try:
                photo = load_image(catalog.image_paths[code], draft_size=size)  # JPEGs decode at about page size
            except ImageDecodeError:
                photo = None
        price = None if prices is None else float(prices[code])
        return render_product_page(photo, catalog.titles[code], price, catalog.texts[code], size=size,
                                   seed=seed + code)

    return render


def _encode_rendered(encoder: Any, render: Callable[[int], Any], n: int, batch_size: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """A locked tower's features of rendered images (e.g. product pages for a tiling screen tower)."""
    out = torch.zeros(n, encoder.dim)
    ok = np.zeros(n, dtype=bool)
    for start in range(0, n, batch_size):
        images = [(code, render(code)) for code in range(start, min(n, start + batch_size))]
        images = [(code, image) for code, image in images if image is not None]
        if images:
            out[[c for c, _ in images]] = encoder.encode([image for _, image in images]).float().cpu()
            ok[[c for c, _ in images]] = True
    return out, ok


class _Rendered(Sequence):
    """Images made on demand, one at a time, so a catalog's rendered pages never sit in memory at once."""

    def __init__(self, render: Callable[[int], Any], n: int) -> None:
        self.render, self.n = render, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, code: int) -> Any:
        if not 0 <= code < self.n:
            raise IndexError(code)
        return self.render(code)


def align(space: UnifiedSpace, data: Dataset, config: TrainConfig | None = None, *,
          evaluate_fn: Callable[[UnifiedSpace], dict[str, float]] | None = None) -> TrainResult:
    """Train the space's adapters (and trainable towers) on ``data`` with the one loop."""
    return fit(space, data, config or TrainConfig(lr=1e-3, batch_size=256, early_stop_metric="t2i_recall@10"),
               evaluate_fn=evaluate_fn)


@torch.no_grad()
def retrieval_metrics(queries: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """Recall@k of retrieving row i of ``targets`` with row i of ``queries`` (cosine, all rows compete)."""
    sims = queries @ targets.t()
    true = sims.diagonal()[:, None]
    rank = (sims > true).sum(1)
    return {f"recall@{k}": float((rank < k).float().mean()) for k in ks}


def split_by_group(groups: Sequence[Any] | np.ndarray, sizes: Mapping[str, int | float], *, seed: int,
                   eligible: Sequence[bool] | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Item codes of held-out sets and ``"train"``, no group (e.g. a product's colour variants) in two sets.

    ``groups[code]`` is item ``code``'s group. The groups of the ``eligible`` items (all by default) are
    shuffled with ``seed`` and dealt in that order to the sets of ``sizes``, in the mapping's order: each
    set takes whole groups until it is full, and the groups left make ``"train"``. A size is a number of
    items (an int: the set takes groups until it has at least that many) or a share of the groups (a
    float in (0, 1): that many groups, rounded down). Each set lists its groups in the dealt order, a
    group's items ascending.
    """
    groups = np.asarray(groups)
    if "train" in sizes:
        raise ValueError("split_by_group sizes: 'train' is what is left, not a size to give")
    for name, size in sizes.items():
        if isinstance(size, bool) or not (isinstance(size, (int, np.integer)) and size >= 0
                                          or isinstance(size, float) and 0 < size < 1):
            raise ValueError(f"split_by_group sizes[{name!r}] = {size!r}: expected a number of items (int >= 0) "
                             f"or a share of the groups (float in (0, 1))")
    if eligible is not None and len(eligible) != len(groups):
        raise ValueError(f"split_by_group: eligible has {len(eligible)} entries, groups {len(groups)}")
    items = np.arange(len(groups)) if eligible is None else np.flatnonzero(np.asarray(eligible, dtype=bool))
    order = np.random.default_rng(seed).permutation(np.unique(groups[items]))
    members: dict[Any, list[int]] = {}
    for code in items:
        members.setdefault(groups[code], []).append(int(code))
    quota = {name: (int(size), "items") if isinstance(size, (int, np.integer)) else (int(len(order) * size), "groups")
             for name, size in sizes.items()}
    dealt: dict[str, list[int]] = {name: [] for name in sizes}
    taken = dict.fromkeys(sizes, 0)
    train: list[int] = []

    def full(name: str) -> bool:
        size, unit = quota[name]
        return (len(dealt[name]) if unit == "items" else taken[name]) >= size

    for group in order:
        target = next((name for name in sizes if not full(name)), None)
        if target is None:
            train.extend(members[group])
        else:
            dealt[target].extend(members[group])
            taken[target] += 1
    return {**{name: np.array(codes, dtype=np.int64) for name, codes in dealt.items()},
            "train": np.array(train, dtype=np.int64)}


@torch.no_grad()
def space_vectors(space: UnifiedSpace, batches: Iterable[dict[str, torch.Tensor]],
                  modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``modality``'s space vectors ``[N, D]`` of every row of ``batches`` (dicts in the training form, e.g.
    `CatalogPairs.batches`), and which rows have the modality (``[N]`` bool). Pixels run through the
    modality's tower a batch at a time; features and vectors go through the adapter all at once."""
    towered, inputs, masks = [], [], []
    for batch in batches:
        if f"{modality}:pixels" in batch:
            value = batch[f"{modality}:pixels"]
            towered.append(space.project(modality, space.encoders[modality].encode(value)))
        else:
            value = batch.get(f"{modality}:features", batch.get(f"{modality}:vectors"))
            if value is None:
                raise KeyError(f"the batches have no {modality!r} input; they have {sorted(batch)}")
            inputs.append(value)
        mask = batch.get(f"{modality}:mask")
        masks.append(torch.ones(len(value), dtype=torch.bool) if mask is None else mask.bool().cpu())
    if not masks:
        return torch.zeros(0, space.config.dim, device=space.device), torch.zeros(0, dtype=torch.bool)
    vectors = torch.cat(towered) if towered else space.project(modality, torch.cat(inputs))
    return vectors, torch.cat(masks)


class RetrievalValidator:
    """Retrieval between modalities over held-out rows: a space's validation, as ``evaluate_fn`` of `align`.

    For each ``(query, target)`` of ``directions``, row i's query vector must find row i's target vector
    among the rows that have both (cosine, Recall@k for ``ks``). Metrics are named
    ``"<q>2<t>_recall@<k>"`` by the modalities' first letters, e.g. ``t2i_recall@10`` for text→image.
    ``batches`` (kept in memory, embedded at every call) are in the training form, e.g.
    ``CatalogPairs.batches(held_out_rows)`` or a `ShardPairs` collate of held-out items.
    """

    def __init__(self, batches: Iterable[dict[str, torch.Tensor]], directions: Sequence[tuple[str, str]],
                 ks: Sequence[int] = (1, 10)) -> None:
        self.batches, self.directions, self.ks = list(batches), [tuple(d) for d in directions], tuple(ks)
        self.names = [f"{query[0]}2{target[0]}" for query, target in self.directions]
        if not self.directions or len(set(self.names)) != len(self.names):
            raise ValueError(f"RetrievalValidator directions {self.directions}: need at least one, with distinct "
                             f"first letters per direction (metric names {self.names})")
        self.modalities = list(dict.fromkeys(m for direction in self.directions for m in direction))

    @property
    def n_rows(self) -> int:
        """Held-out rows that have every modality the directions use."""
        has = None
        for batch in self.batches:
            rows = torch.ones(len(next(iter(batch.values()))), dtype=torch.bool)
            for modality in self.modalities:
                mask = batch.get(f"{modality}:mask")
                if mask is not None:
                    rows &= mask.bool().cpu()
            has = rows if has is None else torch.cat([has, rows])
        return 0 if has is None else int(has.sum())

    def __call__(self, space: UnifiedSpace) -> dict[str, float]:
        """Every direction's Recall@k on ``space`` as it is now."""
        vectors = {m: space_vectors(space, self.batches, m) for m in self.modalities}
        out = {}
        for name, (query, target) in zip(self.names, self.directions):
            (q, q_has), (t, t_has) = vectors[query], vectors[target]
            keep = (q_has & t_has).to(q.device)
            found = retrieval_metrics(q[keep], t[keep.to(t.device)], self.ks)
            out.update({f"{name}_{k}": v for k, v in found.items()})
        return out
