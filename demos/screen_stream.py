"""Screen-stream demo: an app session rendered from the catalog, turned back into behaviour events, drawn as
a timeline of what was on screen against the truth, and the user's next items from the sequence model.

1. The embedded synthetic fashion world (catalog + purchases), or with ``--hm PATH`` ``--items`` H&M
   articles (those of real purchase sequences first: `catalog_for_sequences`) and their purchases.
2. A grounding space: ``--space DIR`` (a saved space with its ``grounding.json``, e.g. from
   ``mmrec stream calibrate``; `mmrec.grounding.load_grounder`), or one trained here for the catalog as the
   README's screen-stream section describes: `ScreenWindows.fit` to where the training pages put the photo,
   a fixed random tower with adapters trained on those windows (`train_screen_space`; windows off the photo
   and screens without an item as "no item"), and a `PhotoCheck` that picks among the tower's 10 nearest
   items by their photo, with the threshold calibrated on one other rendered session
   (`mmrec.calibration.calibrate_grounder`). It is saved to ``OUT/space`` with its ``grounding.json``, so
   ``--space OUT/space`` (or ``mmrec stream --space``) reuses it.
3. One real purchase sequence of the world rendered as a labelled screen recording (mp4 + ground truth,
   `record_sequence`), processed by `mmrec.stream.process` into ``view`` events, joined with the session's
   app logs into ``click`` / ``cart`` / ``purchase`` events, written for the sequence's user (parquet) and
   read back (`mmrec.events.read_events`).
4. ``timeline.png``: per frame, the true product page (top) and the grounded item (bottom), one colour per
   item, grey where no item is on screen.
5. SASRec (`mmrec.fusion.sequence`) trained on the world's purchases (leave-last-out), then this user's
   top-10 next items from their history with the views the stream saw appended
   (`mmrec.events.events_to_interactions`: the views after every purchase, dwell as weights).

    .venv/bin/python demos/screen_stream.py [--out out/screen_stream] [--seed N] [--space DIR]
    .venv/bin/python demos/screen_stream.py --hm ../shared/data/hm --items 1000 --space out/stream_hm5/space

It ends with the share of product-page frames grounded to the right item, the product pages found (half
their frames or more right) and the time the whole run took.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mmrec.calibration import calibrate_grounder
from mmrec.cli import run_script
from mmrec.config import from_dict
from mmrec.data import Interactions
from mmrec.datasets.app_sim import catalog_for_sequences, record_sequence, sessions_from_purchases
from mmrec.datasets.frames import video_frames
from mmrec.datasets.synthetic import WorldConfig, make_world
from mmrec.events import events_to_interactions, read_events
from mmrec.fusion.screen_tower import train_screen_space, windowed_recipe
from mmrec.grounding import NO_ITEM, Grounder, GroundingSettings, load_grounder, save_grounding
from mmrec.stream import StreamConfig, StreamStats, process, write_events

log = logging.getLogger("screen_stream")


def record(catalog, sequence, seed: int, out: Path):
    """Render one purchase sequence as a labelled app recording at 180x320, 30 fps (touch marks,
    notifications, x264)."""
    return record_sequence(catalog, sequence, out, seed=seed)


def grounding_space(args: argparse.Namespace, catalog, calibration: Path, out: Path) -> Grounder:
    """The given space with its grounding settings, or one trained here for the catalog: windows fitted to where
    the training pages put the photo (`ScreenWindows.fit`), a fixed random tower with adapters trained on those
    windows (`train_screen_space`), and a `PhotoCheck` that settles which of the tower's candidates the photo
    on screen is; the threshold calibrated on the labelled recording in ``calibration``. A trained space is
    saved to ``out`` with its grounding settings."""
    if args.space:
        return load_grounder(args.space, catalog)
    config, check = windowed_recipe(catalog, seed=args.seed, renderings=args.renderings, epochs=args.epochs,
                                    negative_screens=args.negative_screens)
    space = train_screen_space(catalog, config)
    grounder = Grounder.for_catalog(space, catalog, windows=config.windows, check=check)
    grounder.threshold, fit = calibrate_grounder(grounder, [calibration], catalog.ids)
    space.save_pretrained(out)
    save_grounding(out, GroundingSettings(grounder.threshold, config.windows, check), calibration=fit)
    log.info("%d windows per screen; threshold %.3f calibrated on another session (precision %.2f, recall %.2f "
             "there)", config.windows.count(*config.page_size), grounder.threshold, fit["precision"], fit["recall"])
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


OUTPUTS = {"world", "calibration", "space", "session", "events.parquet", "timeline.png"}  # what a run writes


def check_out(out: Path) -> None:
    """``--out`` must be a new or empty folder, or an earlier run's (holding only `OUTPUTS`): a run rewrites them,
    and must not write into a folder of someone else's."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder for the demo's outputs")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS) if out.is_dir() else []
    if foreign:
        raise FileExistsError(f"--out {out} holds files this demo did not write ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); give a new or empty folder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/screen_stream")
    parser.add_argument("--space", help="a saved space with screen and image towers and grounding.json")
    parser.add_argument("--hm", help="an H&M folder (Kaggle layout) instead of the synthetic world")
    parser.add_argument("--items", type=int, default=120, help="items in the catalog")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--renderings", type=int, default=6, help="product pages per item the tower trains on")
    parser.add_argument("--epochs", type=int, default=24, help="adapter training epochs")
    parser.add_argument("--negative-screens", type=int, default=200,
                        help="screens without an item whose windows the tower learns as 'no item'")
    args = parser.parse_args()
    for name, low in (("renderings", 1), ("epochs", 1), ("negative_screens", 0)):
        if getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    started = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    check_out(out)
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
    grounder = grounding_space(args, catalog, out / "calibration", out / "space")

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
    pages = [session.frame_range(st) for st in session.states if st.kind == "product"]
    found = sum(right[f.start:f.stop].mean() >= 0.5 for f in pages if len(f))
    log.info("timeline: %s", out / "timeline.png")

    viewed = [int(item) for item in views["item"]]
    for e in views.itertuples():
        log.info("view %-40s %5.1f s", catalog.titles[e.item][:40], e.dwell)
    seen = events_to_interactions(events, interactions.item_ids, user_ids=interactions.user_ids,
                                  start=int(interactions.timestamps.max()) + 1, kinds=("view",))
    top = next_items(interactions, seen, sequence.user_id)
    print("next items for", sequence.user_id, "after viewing", [catalog.titles[i] for i in viewed])
    for rank, code in enumerate(top, 1):
        print(f"{rank:2d}. {catalog.titles[code]}")
    print(f"product-page frames grounded to the right item: {right.sum()} of {shown.sum()} "
          f"({right.sum() / max(1, shown.sum()):.1%}); product pages found: {found} of {len(pages)}; "
          f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    run_script("screen_stream.py", main)
