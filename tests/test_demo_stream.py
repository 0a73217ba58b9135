"""The screen-stream demo runs end to end: recording, events, timeline PNG and next-item recommendations."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

DEMO = Path(__file__).resolve().parent.parent / "demos" / "screen_stream.py"


def test_screen_stream_demo_writes_events_timeline_and_recommendations(tmp_path):
    # 30 items: the smallest world the demo's purchases allow (its users buy up to 30 distinct items); one
    # torch thread: its towers and SASRec are tiny, and a second thread only waits on a busy machine.
    done = subprocess.run([sys.executable, str(DEMO), "--out", str(tmp_path), "--items", "30"],
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
