"""A stdio worker that breaks the protocol on request (tests of the host's fault
handling). Standard library only; it answers `ping` properly, `echo` with its
arguments, and misbehaves on the commands below. Modes from the first argument:
`exit-before-ready` writes a line to stderr and exits 3 without reading anything;
`ignore-signals` ignores SIGTERM and EOF (it keeps running until killed)."""

import json
import os
import signal
import struct
import sys
import time


def write(fd, obj=None, raw=None):
    body = raw if raw is not None else json.dumps(obj).encode()
    os.write(fd, struct.pack(">I", len(body)) + body)


def read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "exit-before-ready":
        sys.stderr.write("rogue: cannot load the model file\n")
        sys.stderr.flush()
        sys.exit(3)
    if mode == "ignore-signals":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        marker = os.environ.get("ROGUE_PID_FILE")
        if marker:
            with open(marker, "a") as f:
                f.write(f"{os.getpid()}\n")
    fin, fout = 0, 1
    while True:
        head = read_exact(fin, 4)
        if head is None:
            if mode == "ignore-signals":
                while True:  # a worker that ignores EOF as well
                    time.sleep(1)
            return
        (n,) = struct.unpack(">I", head)
        req = json.loads(read_exact(fin, n))
        rid, cmd = req["id"], req["command"]
        if cmd == "ping":
            write(fout, {"id": rid, "success": True, "result": {"streaming": False}})
        elif cmd == "echo":
            write(fout, {"id": rid, "success": True, "result": req.get("args")})
        elif cmd == "garbage":
            write(fout, raw=b"{this is not json")
        elif cmd == "oversize":
            os.write(fout, struct.pack(">I", 0x7FFFFFF0))
        elif cmd == "unknown_id":
            write(fout, {"id": rid + 1000, "success": True, "result": 1})
        elif cmd == "raw_print":
            os.write(fout, b"hello from a careless print\n")
        elif cmd == "close_stdout":
            os.close(fout)
            time.sleep(30)
        elif cmd == "sleep":
            time.sleep(req["args"].get("ms", 0) / 1000)
            write(fout, {"id": rid, "success": True, "result": None})
        else:
            write(fout, {"id": rid, "success": False, "error": f"no tool {cmd}"})


if __name__ == "__main__":
    main()
