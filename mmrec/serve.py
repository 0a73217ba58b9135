"""``mmrec serve``: a small HTTP service over a saved model folder (FastAPI; run by uvicorn).

Endpoints (JSON in and out)::

    GET  /health                           model, sizes, index, where changes go, counters
    GET  /recommend?user=ID&k=12[&candidates=all|cold|warm]
                                           {"user", "items": [ids], "scores": [...], "fallback": null | name}
    POST /items   {"items": [{"id", "title"?, "text"?, "attributes"?, "image"?: base64 JPEG/PNG}]}
                                           new articles, embedded by the model's content recipe, at once
    POST /events  {"events": [{"user", "item"}]}   purchases folded in by the model's ``update``

Bad input is a 4xx answer ``{"error": "<one line naming the input and the problem>"}``, never a 500; a
500 means a bug. A user the model does not know, or knows without history, gets the model's
``recommend_for_unknown``, flagged: ``vae_fusion``'s "popular_by_content", a pipeline's trending list, for
other models the items with the most known purchases ("most_popular").

Concurrency: requests run in uvicorn's thread pool. Readers never lock: each takes the current
`Snapshot` (model, its retrieval index, its version) and answers from it. A writer (``/items``,
``/events``) holds the one write lock, deep-copies the model, changes the copy, rebuilds the index, saves
the copy to ``state_dir`` when there is one, and only then swaps the new snapshot in (one attribute
assignment). So a reader sees the model before a change or after it, never half of it; a change that
fails (bad ids, a failed save) leaves the served model as it was. The cost is a second copy of the model
in memory while a change is made.

The model folder is never written. With ``state_dir`` each change is saved there as a complete model
folder (`mmrec.pretrained`: built aside and renamed into place), so ``mmrec serve --model STATE_DIR``
resumes from it; without one, changes live in memory only and `/health` says so.

Library use::

    from mmrec.serve import create_app
    app = create_app("runs/coldstart/model", ServeConfig(state_dir="runs/served"))   # or a loaded model
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import os
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException

from mmrec.recommender import Recommender

if TYPE_CHECKING:
    import socket

INDEX_KINDS = ("none", "flat", "ivf", "hnsw")
CANDIDATES = ("all", "cold", "warm")
IMAGE_FORMATS = ("JPEG", "PNG")


@dataclass
class ServeConfig:
    """Settings of the service: answer sizes, request limits, the retrieval index and the state folder.

    ``max_k`` caps ``k`` (a larger ``k`` is answered with ``max_k`` items); ``index`` is ``none`` or an
    `mmrec.index` kind (flat | ivf | hnsw) searched for ``candidates=all`` with ``index_candidates``
    proposals re-ranked by the model; ``state_dir`` is where changes are saved (None: memory only).
    """

    default_k: int = 12
    max_k: int = 100
    max_items_per_request: int = 1000
    max_events_per_request: int = 100_000
    max_image_bytes: int = 10 * 2 ** 20
    max_body_bytes: int = 256 * 2 ** 20
    index: str = "none"
    index_candidates: int = 200
    state_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("default_k", "max_k", "max_items_per_request", "max_events_per_request", "max_image_bytes",
                     "max_body_bytes", "index_candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServeConfig.{name} must be a positive integer, got {value!r}")
        if self.default_k > self.max_k:
            raise ValueError(f"ServeConfig.default_k ({self.default_k}) must be ≤ max_k ({self.max_k})")
        if self.index not in INDEX_KINDS:
            raise ValueError(f"ServeConfig.index must be one of {', '.join(INDEX_KINDS)}, got {self.index!r}")


class ServeError(ValueError):
    """Bad input or a refused request: ``status`` (4xx, or 503 for a failed save) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Snapshot:
    """What readers answer from: a model that is never changed once published, its index, its version."""

    model: Recommender
    index: Any
    version: int
    item_index: dict[str, int]
    # The unknown-user answer per candidate set, computed once per snapshot (the same for every unknown user;
    # at full catalogue size it scores every item). Filling it from two threads at once only repeats work.
    fallbacks: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NewItem:
    """One article of ``POST /items``: id, title, text, extra catalog attributes, and image bytes."""

    id: str
    title: str = ""
    text: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    image: bytes | None = None


class ModelService:
    """A loaded model behind a lock-free read path and one write lock (see the module docstring). The
    model given is served as it is (version 0); changes are made to copies, so that object is never changed."""

    def __init__(self, model: Recommender, config: ServeConfig | None = None, *, source: str | None = None) -> None:
        self.config = config or ServeConfig()
        if model.user_ids is None or model.item_ids is None:
            raise ValueError(f"{source or 'the model'} was saved without id vocabularies; cannot answer in "
                             f"external ids")
        self.source = source
        self.state_dir = _check_state_dir(self.config.state_dir, source)
        self._user_index = {str(u): i for i, u in enumerate(model.user_ids)}  # users never change here
        self._write_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._encoder_lock = threading.Lock()
        self._encoder: Any = None
        self.counters = {"recommend": 0, "fallback": 0, "items_added": 0, "events_added": 0, "pairs_added": 0,
                         "changes": 0, "saves": 0, "errors": 0}
        if self.config.index != "none":
            _check_indexable(model, self.config.index)
        self._snapshot = self._publishable(model.eval(), 0)

    # -- state ---------------------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The model answers come from now (never changed after it is published)."""
        return self._snapshot

    def _publishable(self, model: Recommender, version: int, grown_from: Snapshot | None = None) -> Snapshot:
        """A snapshot of ``model`` with its index. ``grown_from``: the model only gained items (``add_items``
        leaves every other vector as it was), so a copy of that snapshot's index takes the new items' vectors
        instead of a rebuild (seconds at full catalogue size); anything else rebuilds."""
        index = None
        if self.config.index != "none":
            from mmrec.index import index_for

            old = None if grown_from is None else grown_from.index
            if old is not None:
                index = old.copy()
                try:
                    index.add(model.factors()[1][len(index):])
                except ValueError:  # a new vector longer than every indexed one: the transform needs a rebuild
                    index = None
            if index is None:
                index = index_for(model, self.config.index)
        return Snapshot(model, index, version, {str(i): c for c, i in enumerate(model.item_ids)})

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter (thread-safe)."""
        with self._count_lock:
            self.counters[name] += n

    @property
    def can_add_items(self) -> bool:
        """Whether ``POST /items`` works: a model with ``add_items`` and a saved content recipe."""
        model = self._snapshot.model
        return hasattr(model, "add_items") and model.content_recipe is not None

    @property
    def can_update(self) -> bool:
        """Whether ``POST /events`` works: a model with ``update``."""
        return hasattr(self._snapshot.model, "update")

    def health(self) -> dict[str, Any]:
        """Status, model, sizes, index, where changes go, counters."""
        snap = self._snapshot
        with self._count_lock:
            counters = dict(self.counters)
        return {"status": "ok", "model": snap.model.name, "source": self.source, "n_users": snap.model.n_users,
                "n_items": snap.model.n_items, "version": snap.version,
                "index": None if snap.index is None else self.config.index,
                "can_add_items": self.can_add_items, "can_update": self.can_update,
                "state": {"saved_to": None if self.state_dir is None else str(self.state_dir),
                          "in_memory_only": self.state_dir is None},
                "counters": counters}

    # -- reading -------------------------------------------------------------------------------------
    def recommend(self, user: str, k: int | None = None, candidates: str = "all") -> dict[str, Any]:
        """Top-``k`` item ids and scores for an external user id; an unknown user gets the flagged fallback."""
        k = self.config.default_k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ServeError(422, f"query k: must be a positive integer, got {k!r}")
        if candidates not in CANDIDATES:
            raise ServeError(422, f"query candidates: must be one of {', '.join(CANDIDATES)}, got {candidates!r}")
        k = min(k, self.config.max_k)
        snap = self._snapshot
        model = snap.model
        code = self._user_index.get(user)
        fallback = None
        with torch.no_grad():
            if code is not None:
                index = snap.index if candidates == "all" else None
                options = {} if index is None else {"index": index,
                                                    "index_candidates": self.config.index_candidates}
                if model.answered_by_fallback([code])[0]:  # known, but nothing of theirs to rank by
                    codes, scores, fallback = _fallback(snap, k, candidates)
                else:
                    codes, scores = model.recommend(np.array([code]), k, candidates=candidates,
                                                    exclude_seen=model.excludes_seen_by_default, **options)
                    codes, scores = codes[0].cpu().numpy(), scores[0].float().cpu().numpy()
            else:
                codes, scores, fallback = _fallback(snap, k, candidates)
        keep = np.isfinite(scores) & (codes >= 0)
        self.count("recommend")
        if fallback is not None:
            self.count("fallback")
        return {"user": user, "items": [str(model.item_ids[c]) for c in codes[keep]],
                "scores": [float(s) for s in scores[keep]], "fallback": fallback, "version": snap.version}

    # -- writing -------------------------------------------------------------------------------------
    def check_can_add_items(self) -> None:
        """`ServeError` 409 unless the model can take new items (``add_items`` and a content recipe)."""
        model = self._snapshot.model
        if not hasattr(model, "add_items"):
            raise ServeError(409, f"POST /items: the {model.name!r} model cannot take new items (train one with "
                                  f"'mmrec train coldstart')")
        if model.content_recipe is None:
            raise ServeError(409, "POST /items: the model has no content recipe (content.json), so new items "
                                  "cannot be embedded the way its items were")

    def add_items(self, items: list[NewItem]) -> dict[str, Any]:
        """Embed new articles by the model's content recipe and add them (no retraining); their ids."""
        self.check_can_add_items()
        if not items:
            raise ServeError(422, "body items: empty list, nothing to add")
        if len(items) > self.config.max_items_per_request:
            raise ServeError(413, f"body items: {len(items)} items, at most {self.config.max_items_per_request} "
                                  f"per request")
        self._check_new_ids([item.id for item in items], self._snapshot)  # early: before the costly embedding
        reads_images = self._snapshot.model.content_recipe.space is not None
        for n, item in enumerate(items):
            if not (item.title.strip() or item.text.strip() or any(v.strip() for v in item.attributes.values())
                    or (item.image is not None and reads_images)):
                raise ServeError(422, f"body items[{n}] (id {item.id!r}): nothing the model's content recipe reads "
                                      f"(give a title, text or attributes{', or an image' if reads_images else ''})")
        vectors = self._embed(items)
        with self._write_lock:
            snap = self._snapshot
            self._check_new_ids([item.id for item in items], snap)  # again: a concurrent request may have added them
            model = _copy(snap.model)
            model.add_items([item.id for item in items], vectors)
            new = self._publish(model, snap, grown=True)
        self.count("items_added", len(items))
        # A text recipe reads the text fields only: say whether the photos sent counted.
        images_used = reads_images and any(item.image is not None for item in items)
        return {"added": [item.id for item in items], "n_items": new.model.n_items, "version": new.version,
                "images_used": images_used}

    def add_events(self, events: list[tuple[str, str]]) -> dict[str, Any]:
        """Fold purchases ``(user id, item id)`` into the model with its ``update`` (no retraining)."""
        if not hasattr(self._snapshot.model, "update"):
            raise ServeError(409, f"POST /events: the {self._snapshot.model.name!r} model cannot fold in new "
                                  f"purchases (it has no update; 'mmrec train coldstart' models do)")
        if not events:
            raise ServeError(422, "body events: empty list, nothing to add")
        if len(events) > self.config.max_events_per_request:
            raise ServeError(413, f"body events: {len(events)} events, at most {self.config.max_events_per_request} "
                                  f"per request")
        users = [u for u, _ in events]
        items = [i for _, i in events]
        unknown_users = sorted({u for u in users if u not in self._user_index})
        if unknown_users:
            raise ServeError(422, f"body events: {len(unknown_users)} user id(s) unknown to the model, e.g. "
                                  f"{unknown_users[:3]} (new users cannot be added without retraining)")
        with self._write_lock:
            snap = self._snapshot
            unknown_items = sorted({i for i in items if i not in snap.item_index})
            if unknown_items:
                raise ServeError(422, f"body events: {len(unknown_items)} item id(s) unknown to the model, e.g. "
                                      f"{unknown_items[:3]} (add them with POST /items first)")
            from mmrec.data import Interactions

            model = _copy(snap.model)
            added = model.update(Interactions.from_ids(users, items))
            # pairs the model already had change nothing: same model, same version, nothing saved
            new = self._publish(model, snap) if added else snap
        self.count("events_added", len(events))
        self.count("pairs_added", added)
        return {"events": len(events), "new_pairs": added, "version": new.version}

    def _publish(self, model: Recommender, old: Snapshot, grown: bool = False) -> Snapshot:
        """Index and save the changed copy, then make it the served model (the caller holds the write lock);
        ``grown``: the change only added items (see `_publishable`)."""
        model.eval()
        snap = self._publishable(model, old.version + 1, old if grown else None)
        if self.state_dir is not None:
            try:
                model.save_pretrained(self.state_dir)
            except OSError as err:
                raise ServeError(503, f"state dir {self.state_dir}: cannot save the changed model "
                                      f"({err.strerror or err}); the change was not applied") from None
            self.count("saves")
        self._snapshot = snap
        self.count("changes")
        return snap

    def _check_new_ids(self, ids: list[str], snap: Snapshot) -> None:
        seen: set[str] = set()
        for n, item_id in enumerate(ids):
            if item_id in snap.item_index:
                raise ServeError(409, f"body items[{n}].id: item id {item_id!r} is already in the model")
            if item_id in seen:
                raise ServeError(409, f"body items[{n}].id: item id {item_id!r} is given twice")
            seen.add(item_id)

    def _embed(self, items: list[NewItem]) -> np.ndarray:
        """Content vectors of the new items, made by the model's recipe (photos through a temporary folder)."""
        from mmrec.data import Catalog
        from mmrec.fusion.cold_vae import normalize_rows

        recipe = self._snapshot.model.content_recipe
        names = sorted({name for item in items for name in item.attributes})
        with tempfile.TemporaryDirectory(prefix="mmrec-serve-") as tmp:
            paths: list[str | None] = []
            for n, item in enumerate(items):
                if item.image is None:
                    paths.append(None)
                    continue
                path = Path(tmp) / f"{n}.img"
                path.write_bytes(item.image)
                paths.append(str(path))
            catalog = Catalog(np.array([item.id for item in items], dtype=object), [item.title for item in items],
                              [item.text for item in items], paths,
                              {name: np.array([item.attributes.get(name, "") for item in items], dtype=object)
                               for name in names})
            # One embedding at a time: encoders are not made for concurrent calls (a fast tokenizer raises
            # "Already borrowed"; the space switches its towers to eval mode and back).
            with self._encoder_lock:
                if recipe.space is not None:
                    return recipe.embed(catalog)
                # A text recipe: as ``recipe.embed`` does, with the encoder built once, not per request.
                from mmrec.encoders import create_encoder, embed

                if self._encoder is None:
                    self._encoder = create_encoder(recipe.encoder)
                return normalize_rows(embed(catalog, self._encoder, texts=recipe.texts(catalog),
                                            progress=False).vectors)


def _copy(model: Recommender) -> Recommender:
    """A deep copy to change; the content recipe (and the encoder space it may hold) is shared, not copied."""
    memo = {} if model.content_recipe is None else {id(model.content_recipe): model.content_recipe}
    return copy.deepcopy(model, memo)


def _fallback(snap: Snapshot, k: int, candidates: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Codes, scores and name of the answer for a user the model does not know (or knows without history):
    the model's ``recommend_for_unknown``."""
    model = snap.model
    if candidates not in snap.fallbacks:  # every such user gets the same list: rank it once, as long as
        answer = model.recommend_for_unknown(model.n_items, candidates)  # any k can ask for
        snap.fallbacks[candidates] = (np.asarray(answer["items"], dtype=np.int64),
                                      np.asarray(answer["scores"], dtype=np.float64), str(answer["fallback"]))
    codes, scores, name = snap.fallbacks[candidates]
    return codes[:k], scores[:k], name


def _check_state_dir(state_dir: str | None, source: str | None) -> Path | None:
    """``state_dir`` as a path, refused when it is the model folder (or inside it) or an existing path that is
    not an empty folder: the first change replaces it, so a foreign folder would be lost, and an earlier run's
    saved changes too (serve those with ``--model`` instead)."""
    if state_dir is None:
        return None
    path = Path(state_dir)
    if source is not None:
        model_dir = Path(source).resolve()
        resolved = path.resolve()
        if resolved == model_dir or model_dir in resolved.parents:
            raise ValueError(f"--state-dir {state_dir}: is the model folder or inside it; the model folder is never "
                             f"changed, give a new folder")
    if path.exists():
        from mmrec.pretrained import MANIFEST_FILE

        if (path / MANIFEST_FILE).is_file():
            raise ValueError(f"--state-dir {state_dir}: already holds a saved model (an earlier run's changes?), "
                             f"which the first change would replace: serve it with --model {state_dir} and give a "
                             f"new --state-dir")
        if not path.is_dir() or any(path.iterdir()):
            raise ValueError(f"--state-dir {state_dir}: exists and is not a saved model folder (it would be "
                             f"replaced on the first change); give a new folder")
    return path


def _check_indexable(model: Recommender, kind: str) -> None:
    try:
        import mmrec.index  # noqa: F401
    except ImportError as err:
        raise ValueError(f"--index {kind}: the retrieval index is not available ({err})") from None
    try:
        model.factors()
    except NotImplementedError as err:
        raise ValueError(f"--index {kind}: {err}; serve it with --index none") from None


def decode_image_field(value: str, where: str, max_bytes: int) -> bytes:
    """Base64 text of a JPEG or PNG photo → its bytes, checked by decoding it (the decompression-bomb
    guard stays on); `ServeError` 422 (413 when too large) naming ``where`` otherwise."""
    from mmrec.encoders.images import ImageDecodeError, decode_image, read_header

    if len(value) > (max_bytes * 4) // 3 + 4:
        raise ServeError(413, f"{where}: image over {max_bytes} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ServeError(422, f"{where}: not valid base64") from None
    try:
        header = read_header(data, where)
        if header.format not in IMAGE_FORMATS:
            raise ServeError(422, f"{where}: a {header.format or 'unknown'} image; JPEG or PNG expected")
        decode_image(data, where)
    except ImageDecodeError as err:
        raise ServeError(422, str(err)) from None
    return data


# -- the HTTP layer -----------------------------------------------------------------------------------------

class ItemIn(BaseModel):
    """One new article of ``POST /items`` (``image``: base64 of a JPEG or PNG file)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(min_length=1, max_length=200)
    title: str = ""
    text: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    image: str | None = None

    @field_validator("id", "title", "text")
    @classmethod
    def _utf8(cls, value: str) -> str:
        """JSON can carry a lone surrogate (``"\\ud800"``), which no text encoder or file can take."""
        return _encodable(value)

    @field_validator("id")
    @classmethod
    def _printable_id(cls, value: str) -> str:
        """An id is printed in answers, logs and CSV files: not blank, no control, format (zero-width, direction)
        or line/paragraph-separator characters — an id that looks like another, or splits a line, in a log."""
        if not value.strip() or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
            raise ValueError("an item id must not be blank or hold control characters (or invisible ones)")
        return value

    @field_validator("attributes")
    @classmethod
    def _utf8_attributes(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            _encodable(key)
            _encodable(text)
        return value


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    return value


class ItemsIn(BaseModel):
    """Body of POST /items."""

    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[ItemIn]


class EventIn(BaseModel):
    """One purchase of ``POST /events``: external user and item ids."""

    model_config = ConfigDict(extra="forbid", strict=True)
    user: str = Field(min_length=1)
    item: str = Field(min_length=1)


class EventsIn(BaseModel):
    """Body of POST /events."""

    model_config = ConfigDict(extra="forbid", strict=True)
    events: list[EventIn]


def create_app(model: Recommender | str | os.PathLike, config: ServeConfig | None = None, *,
               source: str | os.PathLike | None = None):
    """A FastAPI app serving ``model``: a loaded `Recommender` (``source``: the folder it came from, which
    ``state_dir`` must not be), or a saved model folder to load. ``app.state.service`` is its `ModelService`."""
    source = None if source is None else os.fspath(source)
    if not isinstance(model, Recommender):
        source = os.fspath(model)
        model = Recommender.from_pretrained(source)
    service = ModelService(model, config, source=source)
    cfg = service.config

    app = FastAPI(title="mmrec serve", description=__doc__.split("\n\n")[0])
    app.state.service = service

    def error(status: int, message: str) -> JSONResponse:
        service.count("errors")
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ServeError)
    def _serve_error(request: Request, err: ServeError) -> JSONResponse:
        return error(err.status, str(err))

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return error(422, validation_message(err.errors()))

    @app.exception_handler(HTTPException)
    def _http(request: Request, err: HTTPException) -> JSONResponse:
        return error(err.status_code, f"{request.method} {request.url.path}: {err.detail}")

    @app.exception_handler(Exception)
    def _bug(request: Request, err: Exception) -> JSONResponse:  # not bad input: a bug, still answered in JSON
        return error(500, f"{request.method} {request.url.path}: internal error: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}".rstrip(": "))

    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes, on_refusal=lambda: service.count("errors"))

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Status, model name, sizes, index, where changes are saved, counters."""
        return service.health()

    @app.get("/recommend")
    def recommend(user: str = Query(min_length=1), k: int = Query(cfg.default_k),
                  candidates: Literal["all", "cold", "warm"] = "all") -> dict[str, Any]:
        """Top-k items for a user id (unknown users get the model's fallback, flagged)."""
        return service.recommend(user, k, candidates)

    @app.post("/items")
    def items(body: ItemsIn) -> dict[str, Any]:
        """Add new articles at once, no retraining (cold-start models with a content recipe)."""
        service.check_can_add_items()  # before decoding any photo
        return service.add_items([
            NewItem(item.id, item.title, item.text, dict(item.attributes),
                    None if item.image is None else decode_image_field(item.image, f"body items[{n}].image",
                                                                       cfg.max_image_bytes))
            for n, item in enumerate(body.items)])

    @app.post("/events")
    def events(body: EventsIn) -> dict[str, Any]:
        """Fold in purchases (models with update)."""
        return service.add_events([(event.user, event.item) for event in body.events])

    return app


class BodyLimit:
    """ASGI middleware refusing a request whose Content-Length is over ``max_bytes`` (413, JSON error)."""

    def __init__(self, app: Any, max_bytes: int, on_refusal: Any = None) -> None:
        self.app, self.max_bytes, self.on_refusal = app, max_bytes, on_refusal

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                from starlette.responses import JSONResponse

                if self.on_refusal is not None:
                    self.on_refusal()
                message = f"request body: {length.decode('latin-1')[:20]} bytes, at most {self.max_bytes}"
                await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def validation_message(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors as one line: where (``query k``, ``body items[0].id``) and what."""
    parts = []
    for err in errors[:3]:
        loc = list(err.get("loc", ()))
        where = loc[0] if loc else "request"
        path = ""
        for part in loc[1:]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            parts.append(f"body: not valid JSON ({detail})" if detail else "body: not valid JSON")
            continue
        message = str(err.get("msg", "invalid")).replace("\n", " ")
        value = err.get("input")
        shown = f" (got {value!r})" if isinstance(value, (str, int, float)) and len(repr(value)) < 60 else ""
        parts.append(f"{where} {path}: {message}{shown}".replace(" :", ":"))
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more




# -- running it -----------------------------------------------------------------------------------------------

def bind(host: str, port: int) -> "socket.socket":
    """A listening TCP socket on ``host:port`` (port 0: a free one), so a taken port is one clear error
    (`OSError` naming the address) before the server starts."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and
    # without it every answer waited ~40 ms for the client's delayed ACK (Nagle), whatever its size.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def make_server(app: Any, sock: "socket.socket", log_level: str = "warning") -> Any:
    """A `uvicorn.Server` for ``app`` on the bound ``sock`` (call ``.run(sockets=[sock])``)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False))


@contextlib.contextmanager
def running(app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` from a background thread while the block runs; yields its base URL (tests, benchmarks)."""
    import time

    sock = bind(host, port)
    server = make_server(app, sock)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="mmrec-serve")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server on {host}:{sock.getsockname()[1]} did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
