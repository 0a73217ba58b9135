"""Screen-stream demo: an app session rendered from the catalog, turned back into behaviour events, drawn as
a timeline of what was on screen against the truth, and the user's next items from the sequence model.

1. The embedded synthetic fashion world (catalog + purchases), or with ``--hm PATH`` ``--items`` H&M
   articles (those of real purchase sequences first: `catalog_for_sequences`) and their purchases.
2. A grounding space: ``--space DIR`` (a saved space with its ``grounding.json`` threshold, e.g. from
   ``mmrec stream calibrate``; `mmrec.grounding.load_grounder`), or a small one trained here
   (`mmrec.fusion.screen_tower`: fixed random towers and trained adapters, with the threshold calibrated on
   one other rendered session by `mmrec.calibration.calibrate_grounder`). The synthetic world repeats
   photos exactly and such towers ground poorly, so expect a rough timeline: the measured figures are in
   the README (screen streams).
3. One real purchase sequence of the world rendered as a labelled screen recording (mp4 + ground truth,
   `record_sequence`), processed by `mmrec.stream.process` into ``view`` events, joined with the session's
   app logs into ``click`` / ``cart`` / ``purchase`` events, written for the sequence's user (parquet) and
   read back (`mmrec.events.read_events`).
4. ``timeline.png``: per frame, the true product page (top) and the grounded item (bottom), one colour per
   item, grey where no item is on screen.
5. SASRec (`mmrec.fusion.sequence`) trained on the world's purchases (leave-last-out), then this user's
   top-10 next items from their history with the views the stream saw appended
   (`mmrec.events.events_to_interactions`: the views after every purchase, dwell as weights).

    .venv/bin/python demos/screen_stream.py [--out out/screen_stream] [--space DIR]
    .venv/bin/python demos/screen_stream.py --hm ../shared/data/hm --items 1000 --space out/stream_hm3/space
"""
from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mmrec.calibration import calibrate_grounder
from mmrec.config import from_dict
from mmrec.data import Interactions
from mmrec.datasets.app_sim import catalog_for_sequences, record_sequence, sessions_from_purchases
from mmrec.datasets.frames import video_frames
from mmrec.datasets.synthetic import WorldConfig, make_world
from mmrec.events import events_to_interactions, read_events
from mmrec.fusion.screen_tower import ScreenSpaceConfig, train_screen_space
from mmrec.grounding import NO_ITEM, Grounder, load_grounder
from mmrec.stream import StreamConfig, StreamStats, process, write_events

log = logging.getLogger("screen_stream")


def record(catalog, sequence, seed: int, out: Path):
    """Render one purchase sequence as a labelled app recording at 180x320, 30 fps (touch marks,
    notifications, x264)."""
    return record_sequence(catalog, sequence, out, seed=seed)


def grounding_space(args: argparse.Namespace, catalog, calibration: Path) -> Grounder:
    """The given space with its grounding settings, or a small one trained here and calibrated on the labelled
    recording in ``calibration``."""
    if args.space:
        return load_grounder(args.space, catalog)
    space = train_screen_space(catalog, ScreenSpaceConfig(epochs=30))
    grounder = Grounder.for_catalog(space, catalog)
    grounder.threshold, fit = calibrate_grounder(grounder, [calibration], catalog.ids)
    log.info("threshold %.3f calibrated on another session (precision %.2f, recall %.2f there)",
             grounder.threshold, fit["precision"], fit["recall"])
    return grounder


def item_colour(item: int) -> tuple[int, int, int]:
    """A stable colour per item code; grey for no item."""
    if item == NO_ITEM:
        return (215, 215, 215)
    digest = hashlib.blake2b(str(item).encode(), digest_size=3).digest()
    return tuple(60 + b % 170 for b in digest)


def draw_timeline(truth: np.ndarray, predicted: np.ndarray, fps: int, path: Path) -> None:
    """Two bands, truth above and grounding below, one column per frame (squeezed to 1,200 px)."""
    width, band = 1200, 40
    img = Image.new("RGB", (width + 90, 2 * band + 50), "white")
    draw = ImageDraw.Draw(img)
    n = len(truth)
    for x in range(width):
        k = min(n - 1, x * n // width)
        draw.line([(80 + x, 10), (80 + x, 10 + band)], fill=item_colour(int(truth[k])))
        draw.line([(80 + x, 20 + band), (80 + x, 20 + 2 * band)], fill=item_colour(int(predicted[k])))
    draw.text((5, 10 + band // 3), "truth", fill="black")
    draw.text((5, 20 + band + band // 3), "grounded", fill="black")
    for second in range(0, int(n / fps) + 1, 10):
        x = 80 + int(second * fps * width / n)
        draw.text((x, 25 + 2 * band), f"{second}s", fill="black")
    img.save(path)


def next_items(inter: Interactions, seen: Interactions, session_user: str, k: int = 10) -> list[int]:
    """SASRec on the purchases (leave-last-out); this user's top-k after their history + ``seen`` (their
    events, in ``inter``'s vocabularies, after every purchase)."""
    from mmrec.experiment import run
    from mmrec.splits import leave_last_out
    from mmrec.train import TrainConfig

    model, report = run(leave_last_out(inter), "sasrec", train_config=TrainConfig(epochs=10, batch_size=256,
                                                                                  progress=False, patience=3))
    log.info("SASRec on the purchases: test %s", {m: round(v, 4) for m, v in report["test"].items()
                                                          if m in ("recall@10", "ndcg@10")})
    user = int(np.flatnonzero(inter.user_ids == session_user)[0])
    model.set_history(inter.concat(seen))  # the views come after every purchase, in the order the stream saw them
    with torch.no_grad():
        scores = model.score(torch.tensor([user])).cpu().numpy()[0]
    return [int(i) for i in np.argsort(-scores)[:k]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/screen_stream")
    parser.add_argument("--space", help="a saved space with screen and image towers and grounding.json")
    parser.add_argument("--hm", help="an H&M folder (Kaggle layout) instead of the synthetic world")
    parser.add_argument("--items", type=int, default=120, help="items in the catalog")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.hm:
        from mmrec.datasets import hm

        catalog, interactions = hm.load(args.hm)
        catalog, (calib_sequence, sequence), interactions = catalog_for_sequences(
            catalog, interactions, 2, args.items, seed=args.seed, min_len=3)
    else:
        world = make_world(from_dict(WorldConfig, {"seed": args.seed, "n_users": 400, "n_items": args.items,
                                                  "n_new_items": 0, "new_interactions_per_user": [0, 0],
                                                  "missing_image_fraction": 0.0, "missing_text_fraction": 0.0}),
                           out / "world")
        catalog, interactions = world.catalog, world.interactions
        calib_sequence, sequence = sessions_from_purchases(interactions, 2, min_len=3, seed=args.seed, max_len=4)
    record(catalog, calib_sequence, 1000, out / "calibration")
    grounder = grounding_space(args, catalog, out / "calibration")

    session, video = record(catalog, sequence, 2000, out / "session")
    stats = StreamStats()
    frames = video_frames(video)
    with frames:
        rows = [e for e in session.events if e.item is not None]  # the app's click / cart / purchase rows
        logs = {"timestamp": [e.timestamp for e in rows], "kind": [e.kind for e in rows],
                "item": [e.item for e in rows]}
        count = write_events(process(frames, grounder, StreamConfig(), logs=logs, stats=stats, item_ids=catalog.ids),
                             out / "events.parquet", user=sequence.user_id)
    log.info("%d frames, %d changed, %d encoded, %.0f frames/s → %d events in %s", stats.frames, stats.changed,
             stats.encoded, stats.frames_per_second, count, out / "events.parquet")
    events = read_events(out / "events.parquet")

    truth = session.product_per_frame()
    predicted = np.full(len(truth), NO_ITEM, np.int64)
    times = np.arange(len(truth)) / session.fps
    views = events[events["kind"] == "view"]
    for e in views.itertuples():
        predicted[(times >= e.timestamp - 1e-9) & (times < e.end - 1e-9)] = e.item
    draw_timeline(truth, predicted, session.fps, out / "timeline.png")
    shown = truth != NO_ITEM
    right = (predicted == truth) & shown
    log.info("timeline: %s; frames of a product page grounded to it: %d of %d", out / "timeline.png",
             right.sum(), shown.sum())

    viewed = [int(item) for item in views["item"]]
    for e in views.itertuples():
        log.info("view %-40s %5.1f s", catalog.titles[e.item][:40], e.dwell)
    seen = events_to_interactions(events, interactions.item_ids, user_ids=interactions.user_ids,
                                  start=int(interactions.timestamps.max()) + 1, kinds=("view",))
    top = next_items(interactions, seen, sequence.user_id)
    print("next items for", sequence.user_id, "after viewing", [catalog.titles[i] for i in viewed])
    for rank, code in enumerate(top, 1):
        print(f"{rank:2d}. {catalog.titles[code]}")


if __name__ == "__main__":
    main()
