"""Nothing confirmed is lost when the process writing a study is killed: a child process records
reads through the store and says which it confirmed; it is killed with SIGKILL mid-study (no
clean-up, as a crashed or killed server), and the rows are counted in the database afterwards."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from review import Store
from review.store import CaseIn

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
N_CASES = 400
KILL_AFTER = 25

WRITER = textwrap.dedent("""
    import sys
    from review import Store
    store = Store(sys.argv[1])
    study = store.open_study(sys.argv[2])
    readers = [store.reader(study["id"], f"reader {k}") for k in range(2)]
    for case in store.cases(study["id"]):
        for reader in readers:
            read, _ = store.record_blind(study["id"], case["id"], reader["id"], "mel", 3, False)
            print(f"blind {case['position']} {reader['name']}", flush=True)
            assert store.record_final(study["id"], read["id"], final_dx="nv", biopsy=True, changed_by_ai=True,
                                      heatmaps=[{"method": "gradcam", "rating": "on the lesion"}], note="n",
                                      ai_top="nv", ai_probability=0.8)
            print(f"final {case['position']} {reader['name']}", flush=True)
""")


@pytest.mark.slow
def test_killed_writer_loses_no_confirmed_read(tmp_path):
    url = f"sqlite:///{tmp_path / 'review.sqlite3'}"
    store = Store(url)
    study, code = store.create_study("Durability", [CaseIn(f"c{i}.jpg", f"{i:064x}", "upload", "nv")
                                                    for i in range(N_CASES)], classes=CLASSES)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url, code], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)
    confirmed: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while len(confirmed) < KILL_AFTER and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            confirmed.append(line.strip())
        proc.send_signal(signal.SIGKILL)  # mid-study, mid-transaction perhaps: no clean-up at all
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(confirmed) == KILL_AFTER, f"the writer stopped early: {confirmed[-3:]}"

    con = sqlite3.connect(tmp_path / "review.sqlite3")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    reads = {(r["position"], r["reader"]): r for r in Store(url).reads(study["id"])}
    for line in confirmed:
        kind, pos, reader = line.split(" ", 2)
        row = reads.get((int(pos), reader))
        assert row is not None, f"confirmed {line!r} is missing after the kill"
        if kind == "final":
            assert row["final_dx"] == "nv" and row["final_at"], f"confirmed {line!r} lost its after read"
    blinds = sum(c.startswith("blind") for c in confirmed)
    # every confirmed read is there; at most the one in flight at the kill may be there too
    assert blinds <= len(reads) <= blinds + 1
    assert len(reads) < 2 * N_CASES
