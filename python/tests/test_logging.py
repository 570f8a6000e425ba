"""Worker logging: text and JSON records on stderr with worker id and correlation id."""

import json
import logging

from snakepit_bridge import logging_setup


def _reset():
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_snakepit", False):
            root.removeHandler(h)


def test_json_records_carry_worker_and_correlation_id(capsys):
    try:
        logging_setup.configure("pool-w1", "debug", "json")
        token = logging_setup.correlation_id.set("cid-42")
        try:
            logging.getLogger("app").info("hello %s", "world\nsecond line")
        finally:
            logging_setup.correlation_id.reset(token)
        logging.getLogger("app").debug("outside")
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("app").exception("it failed")
    finally:
        _reset()
    lines = capsys.readouterr().err.splitlines()
    recs = [json.loads(line) for line in lines]
    assert len(recs) == 3
    assert recs[0]["msg"] == "hello world\nsecond line"
    assert recs[0]["level"] == "INFO"
    assert recs[0]["logger"] == "app"
    assert recs[0]["worker_id"] == "pool-w1"
    assert recs[0]["correlation_id"] == "cid-42"
    assert recs[0]["ts"].endswith("Z")
    assert isinstance(recs[0]["pid"], int)
    assert recs[1]["correlation_id"] == "-"
    assert recs[2]["level"] == "ERROR"
    assert "ValueError: bad" in recs[2]["exc"]


def test_line_records_turn_prints_into_json_with_the_correlation_id():
    import io
    import threading

    target = io.StringIO()
    out = logging_setup.LineRecords(target, "stderr")
    token = logging_setup.correlation_id.set("cid-p")
    try:
        print("hello", "world", file=out)
        out.write("partial ")
    finally:
        logging_setup.correlation_id.reset(token)

    def other_thread():
        out.write("from a thread\n")

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    out.write("end\n")  # completes this thread's partial line
    out.write("x" * (logging_setup.LineRecords.MAX_LINE + 1))
    out.write("tail")
    out.flush()
    recs = [json.loads(line) for line in target.getvalue().splitlines()]
    assert [r["msg"] for r in recs[:3]] == ["hello world", "from a thread", "partial end"]
    assert recs[0]["correlation_id"] == "cid-p" and recs[0]["stream"] == "stderr"
    assert "correlation_id" not in recs[1]
    assert "level" not in recs[0]
    assert len(recs[3]["msg"]) == logging_setup.LineRecords.MAX_LINE + 1
    assert recs[4]["msg"] == "tail"


def test_text_format_is_the_default_and_levels_filter(capsys):
    try:
        logging_setup.configure("w2", "warning", None)
        logging.getLogger("app").info("hidden")
        logging.getLogger("app").warning("shown")
    finally:
        _reset()
    err = capsys.readouterr().err
    assert "hidden" not in err
    assert "WARNING" in err and "worker=w2 cid=- app: shown" in err
    assert logging_setup.parse_format("JSON") == "json"
    assert logging_setup.parse_format("yaml") == "text"
