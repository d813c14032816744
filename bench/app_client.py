"""A running app seen from outside, as a visitor's browser or an attacker's script sees it: raw HTTP to Gradio's
routes (upload, the UI's own search event under a fresh session, the `/search` API) and the server process's
resident memory from /proc. Shared by `bench.memory` and the tests that hold the app to its memory bounds."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

API = "gradio_api"
UI_SEARCH = "search_new_photo"  # the UI's search event (private: the browser reaches it by its number)


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` now, in MB."""
    return _status(pid, "VmRSS")


def peak_mb(pid: int) -> float:
    """The highest resident memory of process `pid` since it started or since `reset_peak`, in MB."""
    return _status(pid, "VmHWM")


def reset_peak(pid: int) -> None:
    """Start `peak_mb` afresh from the memory resident now (Linux: "5" to /proc/PID/clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1e3
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


@dataclass
class Answer:
    """What the app answered to one search: its data, or the error message a visitor sees."""

    data: Any = None
    error: str | None = None

    @property
    def busy(self) -> bool:
        return self.error is not None and "queue is full" in self.error.lower()


class AppClient:
    """Raw HTTP to one running app at `url` (ending in "/")."""

    def __init__(self, url: str, timeout: float | None = None):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=timeout)
        config = self.http.get("config").raise_for_status().json()
        by_name = {d.get("api_name"): d["id"] for d in config["dependencies"]}
        self.ui_search_fn = by_name[UI_SEARCH]

    def close(self) -> None:
        self.http.close()

    def upload(self, path: str | Path) -> dict:
        """Send a file as the browser does; its FileData, naming where the app keeps it."""
        with open(path, "rb") as f:
            r = self.http.post(f"{API}/upload", files={"files": (Path(path).name, f)}).raise_for_status()
        return file_data(r.json()[0], Path(path).name)

    def ui_search(self, photo: dict, k: int = 10, category: str = "All", session: str | None = None,
                  colour: str = "All") -> Answer:
        """The UI's search of an uploaded photo, from a session of its own (a new visitor unless `session`)."""
        session = session or uuid.uuid4().hex
        data = [photo, k, category, False, colour, None]  # no auto-crop, not a "more like this" photo
        body = {"data": data, "fn_index": self.ui_search_fn, "session_hash": session, "event_data": None,
                "trigger_id": None}
        r = self.http.post(f"{API}/queue/join", json=body)
        if r.status_code != 200:
            return Answer(error=r.json().get("detail", r.text) if r.headers.get("content-type", "").startswith(
                "application/json") else r.text)
        with self.http.stream("GET", f"{API}/queue/data", params={"session_hash": session}) as stream:
            for message in _events(stream):
                if message.get("msg") == "process_completed":
                    out = message.get("output", {})
                    return Answer(out.get("data")) if message.get("success") else Answer(error=out.get("error")
                                                                                          or "failed")
        return Answer(error="the stream ended without an answer")

    def api_search(self, image: Any, k: Any = 10, category: str = "All", timeout: float | None = None,
                   colour: str = "All") -> Answer:
        """`POST /gradio_api/call/search` with `image` as given (a FileData dict: an upload or any path);
        httpx.TimeoutException when a step takes longer than `timeout` seconds."""
        r = self.http.post(f"{API}/call/search", json={"data": [image, k, category, colour]}, timeout=timeout)
        if r.status_code != 200:
            return Answer(error=r.text)
        event = r.json()["event_id"]
        with self.http.stream("GET", f"{API}/call/search/{event}", timeout=timeout) as stream:
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    data = json.loads(line.split(":", 1)[1]) if line.split(":", 1)[1].strip() else None
                    if kind == "complete":
                        return Answer(data)
                    return Answer(error=str(data.get("error") if isinstance(data, dict) else data or "error"))
        return Answer(error="the stream ended without an answer")


def file_data(path: str, name: str | None = None) -> dict:
    """A FileData payload naming `path` on the server, as Gradio's clients send it."""
    return {"path": path, "orig_name": name or Path(path).name, "meta": {"_type": "gradio.FileData"}}


def _events(stream: httpx.Response):
    for line in stream.iter_lines():
        if line.startswith("data:"):
            yield json.loads(line[5:])
