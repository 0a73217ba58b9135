"""The screen-stream demo runs end to end: recording, grounding, events, timeline PNG and next-item recommendations."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

DEMO = Path(__file__).resolve().parent.parent / "demos" / "screen_stream.py"


def test_screen_stream_demo_grounds_the_session_and_writes_events_timeline_and_recommendations(tmp_path):
    # 30 items: the smallest world the demo's purchases allow (its users buy up to 30 distinct items); the
    # demo's own grounding recipe (fitted windows, fixed random tower, trained adapters, photo check, calibrated
    # threshold) with fewer training pages, epochs and item-less screens than its defaults, to stay quick
    done = subprocess.run([sys.executable, str(DEMO), "--out", str(tmp_path), "--items", "30", "--renderings", "2",
                           "--epochs", "4", "--negative-screens", "20"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "session" / "recording.mp4").is_file()
    events = pd.read_parquet(tmp_path / "events.parquet")
    assert set(events["kind"]) <= {"view", "click", "cart", "purchase"}
    assert {"click", "purchase"} <= set(events["kind"])  # the session's app logs, joined by time
    assert events["user"].nunique() == 1 and f"next items for {events['user'].iloc[0]}" in done.stdout
    with Image.open(tmp_path / "timeline.png") as timeline:
        assert timeline.width > 1000
    ranked = [line for line in done.stdout.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    assert len(ranked) == 10 and "next items for" in done.stdout
    # the session's product pages were grounded: nearly every frame, every page
    summary = re.search(r"grounded to the right item: (\d+) of (\d+) .*pages found: (\d+) of (\d+)", done.stdout)
    assert summary, done.stdout[-2000:]
    right, shown, found, pages = map(int, summary.groups())
    assert shown > 0 and right >= 0.9 * shown and found == pages > 0
    assert (tmp_path / "space" / "grounding.json").is_file()  # the trained space, reusable with --space
