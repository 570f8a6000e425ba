"""A BridgeService worker that is not our package (tests of the gRPC kind with a command
of its own). It follows upstream Snakepit's launch convention: `--port 0` (it binds a
loopback port itself), the bare port number written atomically into
$SNAKEPIT_READY_FILE. It serves Ping and ExecuteTool (`echo` returns its parameters,
`whoami` this process's pid); everything else is left UNIMPLEMENTED. It imports only
grpc and the generated stubs (PYTHONPATH from the host)."""

import argparse
import json
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import any_pb2
import snakepit_bridge_pb2 as pb
import snakepit_bridge_pb2_grpc as pb_grpc


def any_json(value):
    out = any_pb2.Any()
    out.type_url = "type.googleapis.com/google.protobuf.Value"
    out.value = json.dumps(value).encode()
    return out


class Foreign(pb_grpc.BridgeServiceServicer):
    def Ping(self, request, context):
        return pb.PingResponse(message="pong: " + request.message)

    def ExecuteTool(self, request, context):
        params = {k: json.loads(v.value) if v.value else None
                  for k, v in request.parameters.items()}
        if request.tool_name == "echo":
            return pb.ExecuteToolResponse(success=True, result=any_json(params))
        if request.tool_name == "whoami":
            return pb.ExecuteToolResponse(success=True,
                                          result=any_json({"pid": os.getpid(),
                                                           "foreign": True}))
        return pb.ExecuteToolResponse(
            success=False, error_message=json.dumps(
                {"type": "UnknownToolError", "message": f"no tool {request.tool_name}"}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--adapter")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--elixir-address")
    p.add_argument("--snakepit-run-id")
    args, _ = p.parse_known_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_BridgeServiceServicer_to_server(Foreign(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    ready = os.environ["SNAKEPIT_READY_FILE"]
    with open(ready + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(ready + ".tmp", ready)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop(0.5).wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
