"""Replay the hostile corpus (`tools.hostile_corpus`) through the CLI and through the app in Chromium:

    python -m tools.hostile_corpus /tmp/hostile
    python -m tools.hostile_replay /tmp/hostile [--cli] [--browser] [--models assets/models]

CLI: every kind with paths runs `model.cli.predict` twice (JSON lines on standard output; CSV to
`--out`), in this process with a time limit per run. A run passes when it raises nothing (no
traceback), its exit status means what the CLI says it means (0: every file predicted; 1: some file
could not be used or nothing was predicted, with a line saying so), no CSV cell starts a formula,
and no output line carries a control or direction character.

Browser: a fresh `streamlit run` server (HOME and the temporary folder empty and private to it);
each kind is uploaded where it belongs (one image on Analyse; images, zips and labels on Batch
review), one after another in one browser session. A kind passes when the page shows no exception
box and the server log no traceback. At the end the server's peak memory (VmHWM) is read from /proc.
Prints a markdown table per part (docs/hostile-input.md holds the last one).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

from tools import streamlit_server

REPO = Path(__file__).resolve().parents[1]
FORMULA = ("=", "+", "-", "@")
RUN_LIMIT_S = 180


class TimeLimit(Exception):
    pass


def _alarm(*_):
    raise TimeLimit()


def run_cli(models: Path, paths: list[str], extra: list[str]) -> tuple[int | str, str, str]:
    """(exit status or 'traceback'/'hang', stdout, stderr) of one in-process predict run."""
    from model.cli.predict import main

    out, err = io.StringIO(), io.StringIO()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(RUN_LIMIT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc: int | str = main([str(models), *paths, *extra])
    except TimeLimit:
        rc = "hang"
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    except BaseException as e:  # noqa: BLE001 - what we are looking for
        rc = f"traceback ({type(e).__name__})"
    finally:
        signal.alarm(0)
    return rc, out.getvalue(), err.getvalue()


def bad_text(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cf" for ch in text)


def cli_kind(models: Path, row: dict, tmp: Path) -> dict:
    """Both runs of one kind, judged."""
    problems = []
    rc, out, err = run_cli(models, row["cli"], [])
    predicted = sum(1 for line in out.splitlines() if line.strip())
    if not isinstance(rc, int):
        problems.append(f"jsonl: {rc}")
    elif rc == 0 and ("error:" in err or not predicted):
        problems.append("exit 0 despite errors or without output")
    elif rc == 1 and "error" not in err:
        problems.append("exit 1 without a line saying why")
    if bad_text(out) or any(bad_text(line) for line in err.splitlines()):
        problems.append("a direction or control character in the output")
    target = tmp / f"{row['kind']}.csv"
    rc2, _, err2 = run_cli(models, row["cli"], ["--format", "csv", "--out", str(target)])
    if not isinstance(rc2, int):
        problems.append(f"csv: {rc2}")
    elif target.exists():
        cells = [c for r in csv.reader(io.StringIO(target.read_text(encoding="utf-8"))) for c in r]
        if any(c.lstrip().startswith(FORMULA) and not c.lstrip("-").replace(".", "").replace("e", "").isdigit()
               and not _number(c) for c in cells):
            problems.append("a CSV cell starts a formula")
    first = next((line for line in err.splitlines() if "error" in line), "")
    return {"kind": row["kind"], "exit": rc, "predicted": predicted, "first line": first[:110],
            "ok": not problems, "problems": "; ".join(problems)}


def _number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def replay_cli(corpus: Path, models: Path) -> list[dict]:
    rows = json.loads((corpus / "manifest.json").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="hostile-cli-"))
    out = []
    for row in rows:
        if row.get("cli"):
            out.append(cli_kind(models, row, tmp))
            print(f"  cli {row['kind']}: exit {out[-1]['exit']} {'ok' if out[-1]['ok'] else out[-1]['problems']}",
                  file=sys.stderr)
    return out


def table(rows: list[dict], columns: list[str]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", "\\n")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows])


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a process, from /proc/PID/status (VmHWM, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def start_server(models: Path, port: int, log: Path, home: Path) -> subprocess.Popen:
    """The app on `models` with its HOME, TMPDIR and review database inside `home` (nothing may be written
    elsewhere), one OpenMP thread."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return streamlit_server.start(port, {"OMP_NUM_THREADS": "1", "DERMO_MODELS_DIR": str(models), "HOME": str(home),
                                         "TMPDIR": str(home / "tmp"),
                                         "DERMO_REVIEW_DB": f"sqlite:///{home / 'review.sqlite3'}"}, log, 120)


def settle(page, timeout_ms: int = 180_000) -> None:
    """Wait until the app has finished its run (no running indicator) and the page is drawn."""
    page.wait_for_timeout(400)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=timeout_ms)
    page.wait_for_timeout(200)


def upload(page, field, files: list[str], timeout_ms: int = 120_000) -> None:
    """Choose `files` in an upload field and wait until the browser has sent every one (moving on
    mid-upload would cut the request, which the server logs as a client disconnect)."""
    sent: list[int] = []

    def on_response(response) -> None:
        if "upload_file" in response.url and response.request.method == "PUT":
            sent.append(response.status)

    page.on("response", on_response)
    try:
        field.set_input_files(files)
        deadline = time.time() + timeout_ms / 1000
        while len(sent) < len(files) and time.time() < deadline:
            page.wait_for_timeout(100)
    finally:
        page.remove_listener("response", on_response)


def upload_kind(page, url: str, row: dict) -> dict:
    """Upload one kind on its page; the page's verdict."""
    batch = row["page"] == "batch"
    page.goto(f"{url}/{'batch' if batch else ''}", timeout=60_000)
    settle(page)
    inputs = page.locator("input[type=file]")
    upload(page, inputs.first, row["upload"])
    if row.get("labels"):
        settle(page)
        upload(page, inputs.nth(1), [row["labels"]])
    settle(page)
    text = page.locator("body").inner_text()
    errors = page.locator("[data-testid=stException]").count()
    lines = [line for line in text.splitlines() if "not a medical device" not in line]
    shown = next((line for line in lines if any(w in line.lower() for w in (
        "cannot", "not opened", "refused", "not a", "error", "skipped", "gated", "no reliable", "too ",
        "labelled images scored", "images ·", "top class"))), "")
    return {"kind": row["kind"], "page": row["page"], "exception box": errors,
            "traceback on page": "Traceback" in text, "shown": shown[:110]}


def replay_browser(corpus: Path, models: Path, kinds: set[str] | None = None) -> tuple[list[dict], float]:
    """Every upload kind (or those in `kinds`) in one browser session; (rows, server VmHWM in MB)."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    rows = [r for r in json.loads((corpus / "manifest.json").read_text())
            if r.get("upload") and (kinds is None or r["kind"] in kinds)]
    home = Path(tempfile.mkdtemp(prefix="hostile-home-"))
    log = home / "server.log"
    port = streamlit_server.free_port()
    proc = start_server(models, port, log, home)
    out = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            for row in rows:
                before = log.read_text(errors="replace").count("Traceback")
                got = upload_kind(page, f"http://127.0.0.1:{port}", row)
                got["traceback in log"] = log.read_text(errors="replace").count("Traceback") - before
                got["ok"] = not (got["exception box"] or got["traceback on page"] or got["traceback in log"])
                out.append(got)
                print(f"  browser {row['kind']}: {'ok' if got['ok'] else 'FAIL'} {got['shown'][:60]}",
                      file=sys.stderr)
            browser.close()
        peak = vm_hwm_mb(proc.pid)
    finally:
        streamlit_server.stop(proc)
    return out, peak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.hostile_replay", description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path, help="a folder made by python -m tools.hostile_corpus")
    ap.add_argument("--models", type=Path, default=REPO / "assets" / "models")
    ap.add_argument("--cli", action="store_true", help="only the CLI part")
    ap.add_argument("--browser", action="store_true", help="only the browser part")
    args = ap.parse_args(argv)
    both = not (args.cli or args.browser)
    failed = 0
    if args.cli or both:
        rows = replay_cli(args.corpus, args.models)
        failed += sum(not r["ok"] for r in rows)
        print(f"\n### CLI: {len(rows)} kinds, {sum(r['ok'] for r in rows)} passed\n")
        print(table(rows, ["kind", "exit", "predicted", "first line", "ok", "problems"]))
    if args.browser or both:
        rows, peak = replay_browser(args.corpus, args.models)
        failed += sum(not r["ok"] for r in rows)
        print(f"\n### Browser: {len(rows)} uploads, {sum(r['ok'] for r in rows)} passed; server peak memory "
              f"(VmHWM) {peak:,.0f} MB\n")
        print(table(rows, ["kind", "page", "exception box", "traceback in log", "shown", "ok"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
