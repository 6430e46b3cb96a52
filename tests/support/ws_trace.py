"""A browser page's Streamlit websocket traffic as a timeline, for diagnosing a lost interaction.

``Trace(name).attach(page)`` records every message the page sends (``BackMsg``: reruns with
their fragment id, auto-rerun flag and whether the Explain canvas's value rides along) and
receives (``ForwardMsg``: new sessions, finished runs with their status, timers, alerts),
plus console messages and page errors; ``save(path, summary)`` writes it as JSON lines and
``canvas_sent_after(t)`` answers the first question about a stroke the page never showed:
did the browser send the drawing at all?

Used by ``bench/load_test.py --trace DIR``. Twenty 1-epoch sessions lost their first stroke
twice in 120 (docs/results/load_test.md); a dedicated run of 90 traced sessions never did, and
showed every normal stroke as one full rerun carrying the canvas's ~11 KB JSON value followed
by one FINISHED_SUCCESSFULLY.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

#: the widget whose value a stroke delivers (pages/explain.py)
CANVAS_KEY = "explain_canvas"
STATUS = {v: k for k, v in ForwardMsg.ScriptFinishedStatus.items()}


def sent(payload: bytes | str) -> dict:
    """What one message from the browser asks for."""
    if isinstance(payload, str):
        return {"raw": payload[:80]}
    try:
        msg = BackMsg.FromString(payload)
    except Exception as e:  # noqa: BLE001 - a message this Streamlit cannot parse is itself worth seeing
        return {"error": str(e)[:80]}
    kind = msg.WhichOneof("type")
    out: dict = {"type": kind}
    if kind == "rerun_script":
        rerun = msg.rerun_script
        out.update(page=rerun.page_name, fragment=rerun.fragment_id or None, auto=rerun.is_auto_rerun)
        out["widgets"] = len(rerun.widget_states.widgets)
        for w in rerun.widget_states.widgets:
            if CANVAS_KEY in w.id:
                value = getattr(w, w.WhichOneof("value") or "", None)
                out["canvas"] = len(value) if isinstance(value, str | bytes) else None
    return out


def received(payload: bytes | str) -> dict:
    """What one message from the server says (element deltas only by their kind)."""
    if isinstance(payload, str):
        return {"raw": payload[:80]}
    try:
        msg = ForwardMsg.FromString(payload)
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)[:80]}
    kind = msg.WhichOneof("type")
    out: dict = {"type": kind}
    if kind == "script_finished":
        out["status"] = STATUS.get(msg.script_finished, msg.script_finished)
    elif kind == "auto_rerun":
        out.update(interval=msg.auto_rerun.interval, fragment=msg.auto_rerun.fragment_id)
    elif kind == "delta":
        out["fragment"] = msg.delta.fragment_id or None
        if msg.delta.WhichOneof("type") == "new_element":
            element = msg.delta.new_element
            out["element"] = element.WhichOneof("type")
            if out["element"] == "alert":
                out["alert"] = element.alert.body[:60]
    return out


class Trace:
    """The timeline of one page (times from ``time.perf_counter``, as the load test's)."""

    def __init__(self, name: str):
        self.name = name
        self.events: list[dict] = []

    def add(self, kind: str, **fields) -> None:
        self.events.append({"t": round(time.perf_counter(), 3), "k": kind, **fields})

    def attach(self, page) -> Trace:
        """Record ``page``'s websocket messages, console and errors from now on."""

        def on_socket(ws):
            self.add("open", url=ws.url)
            ws.on("framesent", lambda p: self.add("sent", **sent(p)))
            ws.on("framereceived", lambda p: self.add("recv", **received(p)))
            ws.on("close", lambda _ws: self.add("close"))

        page.on("websocket", on_socket)
        page.on("console", lambda m: self.add("console", type=m.type, text=m.text[:200]))
        page.on("pageerror", lambda e: self.add("pageerror", text=str(e)[:200]))
        return self

    def mark(self, what: str) -> None:
        """A harness step (e.g. the mouse-up of a stroke) on the same clock."""
        self.add("mark", what=what)

    def canvas_sent_after(self, t: float) -> bool:
        """Whether a rerun carrying the canvas's value left the browser after time ``t``."""
        return any(e["k"] == "sent" and e.get("canvas") and e["t"] >= t for e in self.events)

    def save(self, path: Path, summary: dict) -> None:
        """The summary line, then one line per event."""
        with open(path, "w") as f:
            f.write(json.dumps({"summary": summary}) + "\n")
            f.writelines(json.dumps(e) + "\n" for e in self.events)
