"""Calibrating a saved space's grounding threshold on labelled recordings: what ``mmrec stream calibrate`` runs.

A labelled recording is a folder as `mmrec.datasets.app_sim.write_recording` writes it: the video
(``recording.mp4``) and ``truth.json``, whose screen states say which item's product page each frame shows
(by item id, mapped to the catalog's codes here). The threshold is fitted on what the stream processor
grounds in them (`mmrec.stream.calibrate_on_streams`: change detection and settling as `mmrec stream` runs
them, best F1 per frame) and written, with the windows and photo check it was fitted with, to the space's
``grounding.json`` (`mmrec.grounding.save_grounding`), which `mmrec stream` and `load_grounder` read.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mmrec.data import Catalog
from mmrec.grounding import (GROUNDING_FILE, NO_ITEM, Grounder, GroundingSettings, load_grounder, load_grounding,
                             save_grounding)
from mmrec.stream import StreamConfig, calibrate_on_streams, open_frames

TRUTH_FILE = "truth.json"


def recording_truth(folder: str | os.PathLike, item_ids: Sequence[str]) -> tuple[Path, np.ndarray]:
    """A labelled recording's video and the item whose product page each frame shows, as codes into
    ``item_ids`` (`NO_ITEM` off product pages). An item the catalog lacks is an error naming the file."""
    from mmrec.datasets.app_sim import load_truth
    from mmrec.io import inside

    folder = Path(folder)
    truth_path = folder / TRUTH_FILE
    if not truth_path.is_file():
        raise FileNotFoundError(f"{truth_path} does not exist: a labelled recording is a folder with the video and "
                                f"{TRUTH_FILE} (as the app simulator writes them)")
    session, data = load_truth(truth_path)
    video = inside(folder, str(data.get("video") or "recording.mp4"), f"{truth_path} 'video'")
    if not video.is_file():
        raise FileNotFoundError(f"{video} (named by {truth_path}) does not exist")
    index = {str(i): k for k, i in enumerate(item_ids)}
    truth = np.full(session.n_frames, NO_ITEM, np.int64)
    for state, written in zip(session.states, data["states"]):
        if state.kind != "product":
            continue
        ident = written.get("item_id")
        if ident is None:
            raise ValueError(f"{truth_path}: a product page without an 'item_id' (write the recording with its "
                             f"catalog so that items are named)")
        if str(ident) not in index:
            raise ValueError(f"{truth_path}: item {ident!r} is not in the catalog given")
        frames = session.frame_range(state)
        truth[frames.start:frames.stop] = index[str(ident)]
    return video, truth


def labelled_streams(folders: Sequence[str | os.PathLike],
                     item_ids: Sequence[str]) -> Iterator[tuple[Any, np.ndarray]]:
    """(frames, true item per frame) of each labelled recording, opened one at a time."""
    for folder in folders:
        video, truth = recording_truth(folder, item_ids)
        with open_frames(video) as frames:
            yield frames, truth


def calibrate_grounder(grounder: Grounder, recordings: Sequence[str | os.PathLike], item_ids: Sequence[str],
                       config: StreamConfig | None = None) -> tuple[float, dict[str, Any]]:
    """The threshold (and its precision, recall, F1) fitted on labelled recordings as the processor grounds
    them with ``config``; the grounder is not changed."""
    if not recordings:
        raise ValueError("calibration needs at least one labelled recording")
    return calibrate_on_streams(grounder, labelled_streams(recordings, item_ids), config)


def calibrate_space(space: str | os.PathLike, catalog: Catalog, recordings: Sequence[str | os.PathLike], *,
                    settings: GroundingSettings | None = None, config: StreamConfig | None = None,
                    out: str | os.PathLike | None = None, batch_size: int = 32,
                    device: str | None = None) -> tuple[GroundingSettings, dict[str, Any]]:
    """Fit a saved space's threshold on labelled ``recordings`` and write ``grounding.json`` (to ``out``: a
    ``.json`` file or a folder; default: the space's own), keeping the windows and photo check of ``settings`` (default: those
    of the space's ``grounding.json``, or a whole-screen search without one). Returns the settings written and
    the calibration's fit (with the recordings and the count of catalog photos skipped as undecodable)."""
    if settings is None:
        settings = load_grounding(space) if (Path(space) / GROUNDING_FILE).is_file() else GroundingSettings(0.5)
    grounder = load_grounder(space, catalog, settings=settings, batch_size=batch_size, device=device)
    threshold, fit = calibrate_grounder(grounder, recordings, catalog.ids, config)
    calibrated = GroundingSettings(threshold, settings.windows, settings.check)
    target = Path(out) if out is not None else Path(space)
    fit = {**fit, "recordings": [str(r) for r in recordings], "photos_skipped": len(grounder.skipped_photos)}
    save_grounding(target, calibrated, calibration=fit)
    return calibrated, fit

