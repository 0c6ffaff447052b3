"""keep_running: run one command and start it again whenever it exits, with a short backoff.

Role: what `make run` puts in front of each Procfile entry, so a crashed or drained node comes
back as under systemd's Restart= in production instead of honcho stopping the whole cluster
when one process exits. A supervisor of one child process; no sockets.

The first restart waits RESTART_BACKOFF_MIN_S, each further quick exit doubles the wait up to
RESTART_BACKOFF_MAX_S, and a child that ran RESTART_RESET_AFTER_S before exiting resets it.
SIGINT or SIGTERM (honcho's Ctrl-C signals the whole process group) stops it: the child gets
the signal too, is waited for, and is not started again.

Usage: python -m tools.keep_running COMMAND [ARG...]
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

from fabric import timing

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class _Supervisor:
    """Starts the command, restarts it after each exit, until a stop signal arrives."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Stop: pass the signal on to a running child; no restart after it exits."""
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self) -> int:
        """Exit status: 0 when stopped by a signal; 127 when the command cannot be started."""
        backoff = timing.RESTART_BACKOFF_MIN_S
        while not self.stopping:
            started = time.monotonic()
            try:
                self.child = subprocess.Popen(self.argv)
            except OSError as err:
                print(f"keep_running: cannot start {self.argv[0]}: {err}", file=sys.stderr)
                return 127
            if self.stopping:  # the signal came while it was starting
                self.child.terminate()
            status = self.child.wait()
            if self.stopping:
                break
            ran = time.monotonic() - started
            if ran >= timing.RESTART_RESET_AFTER_S:
                backoff = timing.RESTART_BACKOFF_MIN_S
            print(
                f"keep_running: {' '.join(self.argv)} exited with {status} after {ran:.1f} s; "
                f"starting it again in {backoff:g} s",
                file=sys.stderr,
                flush=True,
            )
            if self._wait_for_stop(backoff):
                break
            backoff = min(backoff * 2, timing.RESTART_BACKOFF_MAX_S)
        return 0

    def _wait_for_stop(self, seconds: float) -> bool:
        """Sleep `seconds` unless SIGINT/SIGTERM arrives first; True if one did (or had)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            return self.stopping or signal.sigtimedwait(_STOP_SIGNALS, seconds) is not None
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m tools.keep_running COMMAND [ARG...]`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m tools.keep_running COMMAND [ARG...]", file=sys.stderr)
        return 2
    supervisor = _Supervisor(argv)
    for signum in _STOP_SIGNALS:
        signal.signal(signum, supervisor.on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
