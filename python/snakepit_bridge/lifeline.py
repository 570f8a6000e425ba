"""Die with the host, even when the host is SIGKILLed.

Two independent signals, watched by one daemon thread:

* ``--parent-fd N``: the read end of a pipe whose write end only the host holds. The
  kernel closes the write end when the host dies for any reason, so we read EOF.
* the parent pid: checked every ``interval`` seconds against the pid we started with
  (backup for hosts that pass no fd).

On loss the thread calls ``on_lost`` (the server then stops with a short grace) and,
should the process still be alive ``hard_exit_after`` seconds later, ``os._exit(0)``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
from typing import Callable, Optional

log = logging.getLogger("snakepit_bridge.lifeline")


def _default_on_lost(reason: str) -> None:
    os._exit(0)


class Lifeline:
    """Watches the host; see the module docstring."""

    def __init__(self, parent_fd: Optional[int] = None, parent_pid: Optional[int] = None,
                 interval: float = 0.25, hard_exit_after: float = 0.75,
                 on_lost: Callable[[str], None] = _default_on_lost):
        self.parent_fd = parent_fd
        self.parent_pid = os.getppid() if parent_pid is None else parent_pid
        self.interval = interval
        self.hard_exit_after = hard_exit_after
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.lost_reason: Optional[str] = None
        if parent_fd is not None:
            os.fstat(parent_fd)  # raises OSError(EBADF) for a bad fd: fail at startup
            os.set_inheritable(parent_fd, False)  # tools' subprocesses must not hold it

    def set_on_lost(self, on_lost: Callable[[str], None]) -> None:
        with self._lock:
            self._on_lost = on_lost

    def start(self) -> "Lifeline":
        self._thread = threading.Thread(target=self._run, name="snakepit-lifeline",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (used by tests; a worker simply exits)."""
        self._stop.set()

    # ------------------------------------------------------------------ internals
    def _fd_closed(self, poller: Optional[select.poll]) -> bool:
        if poller is None:
            self._stop.wait(self.interval)
            return False
        events = poller.poll(self.interval * 1000)
        if not events:
            return False
        try:
            data = os.read(self.parent_fd, 4096)  # type: ignore[arg-type]
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return False
            return True
        return data == b""  # anything the host writes is ignored

    def _run(self) -> None:
        poller = None
        if self.parent_fd is not None:
            poller = select.poll()
            poller.register(self.parent_fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while not self._stop.is_set():
            reason = None
            if self._fd_closed(poller):
                reason = f"lifeline fd {self.parent_fd} reached EOF"
            elif os.getppid() != self.parent_pid:
                reason = f"parent pid {self.parent_pid} is gone"
            if reason is None:
                continue
            if self._stop.is_set():
                return
            self.lost_reason = reason
            log.warning("host lost (%s): exiting", reason)
            with self._lock:
                on_lost = self._on_lost
            try:
                on_lost(reason)
            except Exception:  # noqa: BLE001 - exit regardless
                log.exception("lifeline callback failed")
            # The graceful path normally ends the process well before this fires.
            self._stop.wait(self.hard_exit_after)
            if not self._stop.is_set():
                os._exit(0)
            return
