"""Worker process lifecycle: config → adapter import → ``on_worker_start`` → grpc.aio
server → ready file → wait for SIGTERM/SIGINT or host loss → stop → ``on_worker_stop``
→ exit.

Exit codes: 0 clean stop (signal or host gone), 1 startup failure, 3 adapter import
failure. Failures before readiness are also written to ``<ready-file>.error`` as JSON.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import stat
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import List, Mapping, Optional, Sequence

from . import host_link, logging_setup
from .calls import AdapterRuntime, adapter_config, import_adapter
from .config import MAX_MESSAGE_BYTES, WorkerConfig, parse_config, set_current
from .errors import AdapterImportError, StartupError, error_type_name
from .heartbeat import run_host_heartbeat
from .lifeline import Lifeline

log = logging.getLogger("snakepit_bridge.server")

EXIT_OK = 0
EXIT_STARTUP_FAILURE = 1
EXIT_ADAPTER_IMPORT_FAILURE = 3

#: Grace given to in-flight RPCs when the host is gone (nobody waits for replies).
HOST_LOST_GRACE_S = 0.5


# ----------------------------------------------------------------------------- files

def write_atomic(path: str, content: str) -> None:
    """Write ``<path>.tmp``, fsync it, ``os.replace`` it onto *path*, fsync the dir."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    try:
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def error_file_path(ready_file: str) -> str:
    return f"{ready_file}.error"


def write_error_file(ready_file: Optional[str], exc: BaseException) -> None:
    """Report a startup failure to the host as ``{type, message, traceback}`` JSON."""
    cause = exc.cause if isinstance(exc, AdapterImportError) and exc.cause else exc
    payload = {
        "type": error_type_name(cause),
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(type(cause), cause,
                                                        cause.__traceback__)),
    }
    if not ready_file:
        return
    try:
        write_atomic(error_file_path(ready_file), json.dumps(payload))
    except OSError as err:
        print(f"snakepit_bridge: cannot write error file: {err}", file=sys.stderr)


def _remove_quietly(path: Optional[str]) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc)


def _ready_file_hint(argv: Sequence[str], env: Mapping[str, str]) -> Optional[str]:
    """The ready file, found without full parsing (for reporting bad command lines)."""
    args = list(argv)
    for i, a in enumerate(args):
        if a == "--ready-file" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--ready-file="):
            return a.split("=", 1)[1]
    return env.get("SNAKEPIT_READY_FILE") or None


# ----------------------------------------------------------------------------- adapter
# import_adapter lives in calls.py (shared with the stdio bridge); imported above.

def list_tools_json(adapter_class: type) -> list:
    """``[{name, description, parameters: [{name, type, required}], supports_streaming}]``."""
    from .adapter import _tool_table

    tools = []
    for name, (attr, meta) in sorted(_tool_table(adapter_class).items()):
        params = []
        try:
            sig = inspect.signature(getattr(adapter_class, attr))
        except (TypeError, ValueError, AttributeError):
            sig = None
        for p in (sig.parameters.values() if sig else ()):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("self", "cls"):
                continue
            params.append({"name": p.name, "required": p.default is inspect.Parameter.empty})
        tools.append({"name": name, "description": meta.description,
                      "parameters": params, "supports_streaming": meta.supports_streaming})
    return tools


# ----------------------------------------------------------------------------- server

def _prepare_socket_path(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"--socket {path!r} exists and is not a socket")
    os.unlink(path)  # stale socket from a previous incarnation


def ready_content(cfg: WorkerConfig, port: int) -> str:
    if cfg.socket:
        return f"unix:{cfg.socket}"
    if cfg.ready_file_from_env:
        return str(port)  # upstream hosts read a bare port number
    return f"127.0.0.1:{port}"


async def serve(cfg: WorkerConfig, adapter_class: type, lifeline: Optional[Lifeline],
                executor: ThreadPoolExecutor) -> int:
    import grpc

    from .servicer import HOST_CALL_TIMEOUT_S, BridgeServicer, pb2_grpc

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_grpc_teardown)
    stop_event = asyncio.Event()
    host_lost = False

    def request_stop(reason: str, lost: bool = False) -> None:
        nonlocal host_lost
        host_lost = host_lost or lost
        if not stop_event.is_set():
            log.info("stopping: %s", reason)
            stop_event.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, signal.Signals(sig).name)
    if lifeline is not None:
        def on_host_lost(reason: str) -> None:
            _kill_group_members()
            loop.call_soon_threadsafe(request_stop, reason, True)
        lifeline.set_on_lost(on_host_lost)

    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]
    runtime = AdapterRuntime(adapter_class)
    await _start_adapter(runtime, executor)
    if stop_event.is_set():  # stopped while the adapter was starting
        await _stop_adapter(runtime)
        return EXIT_OK

    server = grpc.aio.server(options=options)
    servicer = BridgeServicer(adapter_class, cfg, executor, runtime=runtime)
    pb2_grpc.add_BridgeServiceServicer_to_server(servicer, server)

    if cfg.socket:
        _prepare_socket_path(cfg.socket)
    address = cfg.listen_address()
    try:
        port = server.add_insecure_port(address)
    except Exception as exc:  # noqa: BLE001
        raise StartupError(f"cannot bind {address}: {exc}") from exc
    if not port:
        raise StartupError(f"cannot bind {address}")

    started = False
    heartbeat_task: Optional[asyncio.Future] = None
    try:
        await server.start()
        started = True
        if cfg.socket:
            try:
                os.chmod(cfg.socket, 0o600)
            except OSError:
                pass
        # Ready means the host knows this worker's tools (bounded: best effort).
        await servicer.tools_registered(timeout=HOST_CALL_TIMEOUT_S)
        if cfg.ready_file:
            try:
                write_atomic(cfg.ready_file, ready_content(cfg, port))
            except OSError as exc:
                raise StartupError(f"cannot write ready file {cfg.ready_file!r}: {exc}") \
                    from exc
        log.info("serving %s (adapter %s)", address if cfg.socket else f"127.0.0.1:{port}",
                 cfg.adapter)
        if servicer.has_host and cfg.heartbeat.enabled:
            def on_lost(reason: str) -> None:
                log.error("stopping: %s", reason)
                _kill_group_members()
                request_stop(reason, True)
            heartbeat_task = asyncio.ensure_future(run_host_heartbeat(
                cfg.heartbeat, servicer.ping_host, on_lost))

        await stop_event.wait()
    finally:
        if heartbeat_task is not None:
            heartbeat_task.cancel()
        grace = min(HOST_LOST_GRACE_S, cfg.grace_period_s) if host_lost \
            else cfg.grace_period_s
        # An open StreamTelemetry would hold server.stop for the whole grace period.
        servicer.telemetry.close()
        if started:
            await server.stop(grace)
        await servicer.close()
        await _stop_adapter(runtime)
    return EXIT_OK


async def _start_adapter(runtime: AdapterRuntime, executor: ThreadPoolExecutor) -> None:
    """``on_worker_start(config)`` before the server binds (so before the ready file),
    in a worker thread so signals are still handled; a failure is a startup failure."""
    config = adapter_config(os.environ)
    try:
        result = await asyncio.get_running_loop().run_in_executor(executor, runtime.start,
                                                                  config)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:  # noqa: BLE001 - any failure stops the start
        raise StartupError(f"on_worker_start failed: {type(exc).__name__}: {exc}") from exc


async def _stop_adapter(runtime: AdapterRuntime) -> None:
    """``on_worker_stop()`` once, after the server stopped; failures are only logged."""
    try:
        result = runtime.stop()
        if inspect.isawaitable(result):
            await result
    except Exception:  # noqa: BLE001
        log.exception("on_worker_stop failed")


def _quiet_grpc_teardown(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """grpc.aio reports a streaming call whose client went away (cancelled, host
    stopped the stream) as an unretrieved ``ExecuteBatchError`` from its own task;
    that is an ordinary end of a call, logged at debug, not an error."""
    exc = context.get("exception")
    if exc is not None and type(exc).__name__ == "ExecuteBatchError":
        log.debug("a call ended after its client went away: %s", exc)
        return
    loop.default_exception_handler(context)


def _kill_group_members() -> None:
    """SIGKILL the other members of our process group when we lead one: with the host
    gone, nothing a tool started may outlive the worker (they hold no lifeline)."""
    me = os.getpid()
    try:
        if os.getpgid(0) != me:
            return
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
            # After the command name: state, ppid, pgrp.
            if int(raw[raw.rindex(b")") + 2:].split()[2]) == me:
                os.kill(int(name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue


def _maybe_setsid(cfg: WorkerConfig) -> None:
    if not cfg.process_group:
        return
    try:
        if os.getpgid(0) != os.getpid():
            os.setsid()
    except OSError as exc:
        log.warning("setsid failed: %s", exc)


def _silence_stdout() -> None:
    """Route anything printed to stdout (ours, adapters', C libraries') to stderr."""
    try:
        sys.stdout.flush()
        os.dup2(2, 1)
    except OSError:
        pass
    sys.stdout = sys.stderr


def run(argv: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None) -> int:
    """The worker's main; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    # --list-tools answers on the real stdout; everything else printed goes to stderr.
    tools_out = os.dup(1) if "--list-tools" in argv else None
    _silence_stdout()

    try:
        cfg = parse_config(argv, env)
    except ValueError as exc:
        logging_setup.configure("", env.get("SNAKEPIT_LOG_LEVEL"), env.get("SNAKEPIT_LOG_FORMAT"))
        print(f"snakepit_bridge: error: {exc}", file=sys.stderr)
        write_error_file(_ready_file_hint(argv, env), StartupError(str(exc)))
        return EXIT_STARTUP_FAILURE

    if env is os.environ:
        # The token stays in the config only: processes a tool starts do not get it.
        os.environ.pop(host_link.TOKEN_ENV, None)
    logging_setup.configure(cfg.worker_id, cfg.log_level, cfg.log_format)
    if logging_setup.parse_format(cfg.log_format) == "json" and not cfg.list_tools:
        logging_setup.capture_prints()
    set_current(cfg)

    if cfg.health_check:
        if not cfg.adapter:
            return EXIT_OK
        try:
            from .protocol import load
            load()
            import_adapter(cfg.adapter)
        except (AdapterImportError, StartupError) as exc:
            print(f"snakepit_bridge: health check failed: {exc}", file=sys.stderr)
            return EXIT_STARTUP_FAILURE
        return EXIT_OK

    if cfg.list_tools:
        try:
            from .protocol import load
            load()
            tools = list_tools_json(import_adapter(cfg.adapter or ""))
        except (AdapterImportError, StartupError) as exc:
            print(f"snakepit_bridge: list tools failed: {exc}", file=sys.stderr)
            return EXIT_ADAPTER_IMPORT_FAILURE
        with os.fdopen(tools_out if tools_out is not None else os.dup(1), "w") as out:
            out.write(json.dumps(tools) + "\n")
        return EXIT_OK

    if cfg.ready_file:
        _remove_quietly(error_file_path(cfg.ready_file))
    _maybe_setsid(cfg)

    lifeline: Optional[Lifeline] = None
    executor: Optional[ThreadPoolExecutor] = None
    loop: Optional[asyncio.AbstractEventLoop] = None
    try:
        # Watch the host from the start: a slow adapter import must not outlive it.
        try:
            lifeline = Lifeline(cfg.parent_fd).start()
        except OSError as exc:
            raise StartupError(f"--parent-fd {cfg.parent_fd} is not usable: {exc}") from exc

        from .protocol import load
        load()
        adapter_class = import_adapter(cfg.adapter or "")

        executor = ThreadPoolExecutor(max_workers=cfg.max_workers,
                                      thread_name_prefix="snakepit-tool")
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.set_default_executor(executor)
        return loop.run_until_complete(serve(cfg, adapter_class, lifeline, executor))
    except AdapterImportError as exc:
        print(f"snakepit_bridge: adapter import failed: {exc}", file=sys.stderr)
        if exc.cause is not None:
            traceback.print_exception(type(exc.cause), exc.cause, exc.cause.__traceback__,
                                      file=sys.stderr)
        write_error_file(cfg.ready_file, exc)
        return EXIT_ADAPTER_IMPORT_FAILURE
    except Exception as exc:  # noqa: BLE001 - any other startup failure
        print(f"snakepit_bridge: startup failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        if not isinstance(exc, StartupError):
            traceback.print_exc(file=sys.stderr)
        write_error_file(cfg.ready_file, exc)
        return EXIT_STARTUP_FAILURE
    finally:
        if cfg.socket:
            try:
                if stat.S_ISSOCK(os.lstat(cfg.socket).st_mode):
                    os.unlink(cfg.socket)
            except OSError:
                pass
        if executor is not None:
            # Tools still running in threads are abandoned; the caller exits hard.
            executor.shutdown(wait=False, cancel_futures=True)
        if loop is not None:
            try:
                loop.close()
            except Exception:  # noqa: BLE001
                pass
        if lifeline is not None:
            lifeline.stop()


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: run, flush, and exit without waiting for stuck tool threads."""
    code = run(argv)
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)
