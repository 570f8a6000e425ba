"""The worker's token reaches the host with every call (docs/security.md).

A fake host records the metadata of each call; the servicer's blocking channel (used
by SessionContext from tool threads) and its asyncio channel (heartbeats, tool
registration) must both send ``x-snakepit-token``.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

import grpc

import snakepit_bridge_pb2 as pb2
import snakepit_bridge_pb2_grpc as pb2_grpc
from snakepit_bridge import host_link
from snakepit_bridge.adapters.session_showcase import SessionShowcaseAdapter
from snakepit_bridge.config import parse_config
from snakepit_bridge.servicer import BridgeServicer

TOKEN = "ab" * 32


class RecordingHost(pb2_grpc.BridgeServiceServicer):
    """Answers Heartbeat and GetSessionState; refuses calls without TOKEN, as the host."""

    def __init__(self):
        self.seen = []

    def _admit(self, context):
        tokens = [v for k, v in context.invocation_metadata() if k == host_link.TOKEN_HEADER]
        self.seen.append(tokens)
        if tokens != [TOKEN]:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no bridge token")

    def Heartbeat(self, request, context):
        self._admit(context)
        return pb2.HeartbeatResponse(session_valid=True)

    def GetSessionState(self, request, context):
        self._admit(context)
        return pb2.GetSessionStateResponse(found=False)


@contextlib.contextmanager
def host(short_dir):
    fake = RecordingHost()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    pb2_grpc.add_BridgeServiceServicer_to_server(fake, server)
    address = f"unix:{short_dir}/host.sock"
    assert server.add_insecure_port(address)
    server.start()
    try:
        yield fake, address
    finally:
        server.stop(0)


def _config(address, token):
    env = {"SNAKEPIT_BRIDGE_TOKEN": token} if token else {}
    return parse_config(["--adapter", "a.B", "--port", "0", "--elixir-address", address],
                        env)


def test_the_token_comes_from_the_environment_and_stays_out_of_repr():
    cfg = _config("unix:/nowhere", TOKEN)
    assert cfg.bridge_token == TOKEN
    assert TOKEN not in repr(cfg)
    assert _config("unix:/nowhere", None).bridge_token is None


def test_both_channels_send_the_token_with_every_call(short_dir):
    with host(short_dir) as (fake, address):
        servicer = BridgeServicer(SessionShowcaseAdapter, _config(address, TOKEN),
                                  ThreadPoolExecutor(max_workers=1))

        async def go():
            await servicer.ping_host(5)
            await servicer.ping_host(5)
            # The blocking channel, as SessionContext uses it from a tool's thread.
            stub = await asyncio.get_running_loop().run_in_executor(
                None, servicer._sync_host)
            resp = await asyncio.get_running_loop().run_in_executor(
                None, lambda: stub.GetSessionState(
                    pb2.GetSessionStateRequest(session_id="s", key="k"), timeout=5))
            assert resp.found is False
            await servicer.close()

        asyncio.run(asyncio.wait_for(go(), 20))
        assert fake.seen == [[TOKEN]] * 3


def test_without_a_token_the_host_refuses(short_dir):
    with host(short_dir) as (fake, address):
        servicer = BridgeServicer(SessionShowcaseAdapter, _config(address, None),
                                  ThreadPoolExecutor(max_workers=1))

        async def go():
            try:
                await servicer.ping_host(5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            finally:
                await servicer.close()
            return None

        assert asyncio.run(asyncio.wait_for(go(), 20)) == grpc.StatusCode.UNAUTHENTICATED
        assert fake.seen == [[]]
