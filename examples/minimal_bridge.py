"""The smallest complete stdio worker (docs/workers.md, "Writing a bridge"): standard
library only, one request at a time, no streaming. Translate it to any language that
can read stdin and write stdout. Run it as a pool:

    [[pools]]
    name = "minimal"
    kind = "stdio"
    command = ["/usr/bin/python3", "examples/minimal_bridge.py"]
"""
import json
import os
import struct
import sys

TOOLS = {
    "echo": lambda args: args,
    "add": lambda args: args["a"] + args["b"],
}


def read_frame(fd):
    """One frame: 4-byte big-endian length, then that many bytes of JSON; None at EOF."""
    head = read_exact(fd, 4)
    if head is None:
        return None
    body = read_exact(fd, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


def read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def write_frame(fd, obj):
    body = json.dumps(obj).encode()
    os.write(fd, struct.pack(">I", len(body)) + body)


def main():
    # Frames own fds 0 and 1; whatever the tools print goes to stderr (the host's log).
    frames_in, frames_out = 0, os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while True:
        req = read_frame(frames_in)
        if req is None:  # the host is gone or closed the channel: exit
            return
        rid, command = req["id"], req["command"]
        if command == "ping":  # readiness and heartbeats; declare what we serve
            write_frame(frames_out, {"id": rid, "success": True,
                                     "result": {"streaming": False, "tools": sorted(TOOLS)}})
        elif command not in TOOLS:
            write_frame(frames_out, {"id": rid, "success": False,
                                     "error_type": "UnknownToolError",
                                     "error": f"no tool {command}"})
        else:
            try:
                result = TOOLS[command](req.get("args", {}))
                write_frame(frames_out, {"id": rid, "success": True, "result": result})
            except Exception as e:  # the caller gets tool_error with type and message
                write_frame(frames_out, {"id": rid, "success": False,
                                         "error_type": type(e).__name__, "error": str(e)})


if __name__ == "__main__":
    main()
