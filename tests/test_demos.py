"""The demo scripts' error boundary: a mistyped ``--out`` destroys nothing and bad input is one line, exit 2."""
import subprocess
import sys
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parent.parent / "demos"


def _demo(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMOS / name), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["quickstart.py", "search.py", "fashion_cold_start.py"])
def test_an_html_demo_never_writes_its_report_over_a_file_that_is_not_one(name, tmp_path):
    notes = tmp_path / "README.md"
    notes.write_text("# my notes\n")
    done = _demo(name, "--out", str(notes))
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"{name}: error: --out {notes} exists and is not an HTML page; a report " \
                                  f"replaces only an earlier report (give a new file name)"
    assert notes.read_text() == "# my notes\n"
    folder = _demo(name, "--out", str(tmp_path)).stderr.strip()
    assert folder.endswith(f"--out {tmp_path} is a folder; give the HTML file to write, e.g. {tmp_path}/report.html")


def test_bad_demo_input_is_one_line_and_exit_2(tmp_path):
    done = _demo("quickstart.py", "--epochs", "0", "--out", str(tmp_path / "q.html"))
    assert (done.returncode, done.stderr.strip()) == (2, "quickstart.py: error: TrainConfig.epochs must be an "
                                                         "integer ≥ 1, got 0")  # checked before the data loads
    done = _demo("quickstart.py", "--hm", str(tmp_path / "nowhere"), "--out", str(tmp_path / "q.html"))
    assert done.returncode == 2 and done.stderr.startswith(f"quickstart.py: error: H&M data folder {tmp_path}/nowhere")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "q.html").exists()


def test_the_screen_stream_demo_writes_only_into_a_new_empty_or_earlier_output_folder(tmp_path):
    (tmp_path / "thesis.tex").write_text("keep me")
    done = _demo("screen_stream.py", "--out", str(tmp_path))
    assert done.returncode == 2 and "holds files this demo did not write (thesis.tex)" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]
