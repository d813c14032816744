"""What one visitor, or a hundred, can cost the app: the app started as the README says (`python app.py`), probed
from outside over HTTP, its resident memory read from /proc.

    python -m bench.memory [--index DIR] [--sessions 40] [--bombs 8] [--crowd 100] [--settle 60] [--json out.json]

In one run, against one app:
- a request naming a server path (`/dev/zero`, `/etc/passwd`, a missing file): how long its answer takes, whether the
  app still serves, whether the answers are alike (no file-exists oracle) and whether anything was copied;
- `--sessions` fresh visitors each searching once through the UI (shop photos of the test split): what stays;
- a small file of a huge image (a 7700x7700 GIF of about 44 kB, the largest the app agrees to decode): the peak
  over the warm app for one such query through the API, and for `--bombs` at once;
- `--crowd` searches at once from as many fresh sessions: each answered or told busy, and the memory `--settle`
  seconds later, against the warm app's.
Peaks are the kernel's high-water mark (VmHWM, reset before each step), not samples.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from PIL import Image

from bench.app_client import AppClient, file_data, peak_mb, reset_peak, rss_mb
from mga.config import DEFAULT_INDEX_DIR, MAX_IMAGE_PIXELS, PROJECT_ROOT, SHARED_DATA
from mga.heap import IDLE_SECONDS

SHOP_PHOTOS = SHARED_DATA / "luma-inshop"
BOMB_SIDE = 7700  # 59.3 MP: just under MAX_IMAGE_PIXELS, the largest image the app agrees to decode
SERVER_PATHS = ("/etc/passwd", "/no/such/file.jpg", "/dev/zero")
GIVE_UP_S = 60.0  # a request naming a server path that is unanswered this long has frozen the app


def small_huge_image(folder: Path, kind: str = "gif", side: int = BOMB_SIDE) -> Path:
    """A one-colour side x side image a few kB long (GIF; palette PNG with transparency) or a few dozen bytes (WebP
    lossless): what costs a decoder far more than its file size says."""
    assert side * side <= MAX_IMAGE_PIXELS
    path = folder / f"huge-{side}.{kind}"
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        if kind == "webp":
            Image.new("RGB", (side, side), (200, 30, 30)).save(path, lossless=True, quality=0, method=0)
        else:
            img = Image.new("P", (side, side), 1)
            img.putpalette([0, 0, 0, 200, 30, 30] + [0, 0, 0] * 254)
            img.save(path, transparency=0, optimize=True) if kind == "png" else img.save(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return path


def shop_photos(n: int) -> list[Path]:
    """`n` query photos of the test split (full size, as a shopper's upload would be)."""
    lines = (SHOP_PHOTOS / "Eval" / "list_eval_partition.txt").read_text().splitlines()[2:]
    queries = [SHOP_PHOTOS / line.split()[0] for line in lines if line.split()[2] == "query"]
    return [queries[i * len(queries) // n] for i in range(n)] if n <= len(queries) else queries


def start_app(tmp: Path, index: str, port: int) -> tuple[subprocess.Popen, str]:
    """`python app.py` as the README starts it, with its own temporary folder; (process, url) once it answers."""
    import httpx

    env = dict(os.environ, HF_HUB_OFFLINE="1", TMPDIR=str(tmp), MGA_INDEX=index)
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=PROJECT_ROOT, env=env,
                            stdout=open(tmp / "app.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while proc.poll() is None:
        try:
            if httpx.get(url + "gradio_api/info").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"the app exited with {proc.returncode}: {(tmp / 'app.log').read_text()[-2000:]}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_paths(client: AppClient, tmp: Path) -> dict:
    """Requests that name files on the server instead of sending one."""
    import httpx

    answers, seconds = [], []
    for path in SERVER_PATHS:
        t0 = time.perf_counter()
        try:
            answers.append(client.api_search(file_data(path), timeout=GIVE_UP_S).error)
        except httpx.TimeoutException:  # a frozen app: no point asking it more
            return {"slowest_answer_s": None, "frozen_by": path, "still_serving": False}
        seconds.append(time.perf_counter() - t0)
    copied = [f.name for f in tmp.rglob("*") if f.is_file() and f.name in ("zero", "passwd")]
    return {"slowest_answer_s": round(max(seconds), 3), "alike": len(set(map(str, answers))) == 1,
            "refused": all(a is not None for a in answers), "copied": copied,
            "still_serving": client.http.get("gradio_api/info", timeout=GIVE_UP_S).status_code == 200}


def settled_rss_mb(pid: int, timeout: float = 60.0) -> float:
    """The app's resident memory once it has settled: past the pause after which it trims its heap (mga.heap),
    then two readings half a second apart within a MB of each other (or `timeout`)."""
    time.sleep(2 * IDLE_SECONDS)
    last, deadline = rss_mb(pid), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss_mb(pid)
        if abs(now - last) < 1:
            return now
        last = now
    return last


def fresh_sessions(client: AppClient, pid: int, photos: list[Path]) -> dict:
    """Each photo searched through the UI by a new visitor; what the app keeps afterwards, once settled."""
    before = settled_rss_mb(pid)
    answered = sum(client.ui_search(client.upload(p)).error is None for p in photos)
    return {"sessions": len(photos), "answered": answered, "kept_mb": round(settled_rss_mb(pid) - before, 1)}


def bombs(client: AppClient, pid: int, bomb: Path, copies: int) -> dict:
    """Peak over the warm app of `copies` API searches of `bomb` at once."""
    uploads = [client.upload(bomb) for _ in range(copies)]
    warm = rss_mb(pid)
    reset_peak(pid)
    with ThreadPoolExecutor(copies) as pool:
        answers = list(pool.map(lambda photo: client.api_search(photo, 5), uploads))
    return {"at_once": copies, "answered": sum(a.error is None for a in answers),
            "peak_extra_mb": round(peak_mb(pid) - warm, 1), "kept_mb": round(rss_mb(pid) - warm, 1)}


def crowd(client: AppClient, pid: int, photo: Path, n: int, start_mb: float, settle_s: float) -> dict:
    """`n` searches at once from `n` fresh sessions: answered or told busy; the memory `settle_s` later."""
    uploads = [client.upload(photo) for _ in range(n)]
    reset_peak(pid)
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(client.ui_search, uploads))
    peak = peak_mb(pid)
    time.sleep(settle_s)
    return {"searches": n, "answered": sum(a.error is None for a in answers), "busy": sum(a.busy for a in answers),
            "other_errors": [a.error for a in answers if a.error is not None and not a.busy][:3],
            "peak_extra_mb": round(peak - start_mb, 1), "after_mb": round(rss_mb(pid) - start_mb, 1),
            "settle_s": settle_s}


def run(index: str, sessions: int, copies: int, crowd_size: int, settle_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        proc, url = start_app(tmp, index, free_port())
        try:
            client = AppClient(url)
            photos = shop_photos(sessions)
            client.api_search(client.upload(photos[0]))  # warm: every buffer of an ordinary search exists
            start = rss_mb(proc.pid)
            out = {"start_mb": round(start, 1), "server_paths": server_paths(client, tmp)}
            if not out["server_paths"]["still_serving"]:
                return out
            out["fresh_sessions"] = fresh_sessions(client, proc.pid, photos)
            bomb = small_huge_image(tmp)
            out["bomb"] = {"file_kb": round(bomb.stat().st_size / 1e3, 1), "side": BOMB_SIDE,
                           "one": bombs(client, proc.pid, bomb, 1), "many": bombs(client, proc.pid, bomb, copies)}
            out["crowd"] = crowd(client, proc.pid, photos[0], crowd_size, start, settle_s)
            client.close()
        finally:
            proc.kill()  # a frozen app does not heed SIGTERM
            proc.wait()
    return out


def report(r: dict) -> None:
    sp = r["server_paths"]
    print(f"warm app: {r['start_mb']:.0f} MB resident")
    if sp.get("frozen_by"):
        print(f"a request naming {sp['frozen_by']}: no answer in {GIVE_UP_S:.0f} s; the app no longer serves")
        return
    fs, b, c = r["fresh_sessions"], r["bomb"], r["crowd"]
    print(f"request naming {', '.join(SERVER_PATHS)}: slowest answer {sp['slowest_answer_s']:.2f} s, refused "
          f"{sp['refused']}, answers alike {sp['alike']}, copied {sp['copied'] or 'nothing'}, still serving "
          f"{sp['still_serving']}")
    print(f"{fs['sessions']} fresh sessions through the UI: {fs['answered']} answered, {fs['kept_mb']:+.0f} MB kept")
    print(f"{b['file_kb']:.0f} kB GIF of {b['side']}x{b['side']}: one query {b['one']['peak_extra_mb']:+.0f} MB at "
          f"peak; {b['many']['at_once']} at once {b['many']['peak_extra_mb']:+.0f} MB at peak, "
          f"{b['many']['kept_mb']:+.0f} MB kept")
    print(f"{c['searches']} searches at once from as many sessions: {c['answered']} answered, {c['busy']} told busy, "
          f"other errors {c['other_errors'] or 'none'}; peak {c['peak_extra_mb']:+.0f} MB, "
          f"{c['settle_s']:.0f} s later {c['after_mb']:+.0f} MB over the warm app")


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default=str(DEFAULT_INDEX_DIR))
    p.add_argument("--sessions", type=int, default=40, help="fresh visitors searching once each")
    p.add_argument("--bombs", type=int, default=8, help="huge-image queries at once")
    p.add_argument("--crowd", type=int, default=100, help="searches at once from as many sessions")
    p.add_argument("--settle", type=float, default=60.0, help="seconds after the crowd before memory is read")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    r = run(args.index, args.sessions, args.bombs, args.crowd, args.settle)
    report(r)
    if not r["server_paths"]["still_serving"]:
        sys.exit("the app stopped serving: the figures after that step are not taken")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return r


if __name__ == "__main__":
    main()
