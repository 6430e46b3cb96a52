"""tests/support/ws_trace.py: the load test's websocket timeline reads Streamlit's messages as they are."""

from __future__ import annotations

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

from tests.support.ws_trace import Trace, received, sent


def rerun(canvas: str | None, fragment: str = "") -> bytes:
    msg = BackMsg()
    msg.rerun_script.fragment_id = fragment
    msg.rerun_script.widget_states.widgets.append(WidgetState(id="$$ID-abc-explain_method", string_value="xwp"))
    if canvas is not None:
        msg.rerun_script.widget_states.widgets.append(WidgetState(id="$$ID-def-explain_canvas", json_value=canvas))
    return msg.SerializeToString()


def test_sent_finds_the_canvas_value_and_the_fragment():
    assert sent(rerun('{"drawing": 1}')) == {
        "type": "rerun_script",
        "page": "",
        "fragment": None,
        "auto": False,
        "widgets": 2,
        "canvas": 14,
    }
    timer = sent(rerun(None, fragment="f1"))
    assert timer["fragment"] == "f1" and "canvas" not in timer
    assert "error" in sent(b"\xff\xff not a message")


def test_received_names_the_finished_status():
    msg = ForwardMsg()
    msg.script_finished = ForwardMsg.FINISHED_SUCCESSFULLY
    assert received(msg.SerializeToString()) == {"type": "script_finished", "status": "FINISHED_SUCCESSFULLY"}


def test_canvas_sent_after_a_time(tmp_path):
    trace = Trace("s")
    trace.add("sent", **sent(rerun(None)))
    t = trace.events[-1]["t"]
    assert not trace.canvas_sent_after(t)  # a rerun without the drawing
    trace.add("sent", **sent(rerun('{"d": 2}')))
    assert trace.canvas_sent_after(t) and not trace.canvas_sent_after(trace.events[-1]["t"] + 1)
    trace.save(tmp_path / "s.jsonl", {"error": ""})
    assert (tmp_path / "s.jsonl").read_text().count("\n") == 3
