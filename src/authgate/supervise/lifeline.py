"""Children that cannot outlive their parent, even when the parent is SIGKILLed."""

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the function below runs between fork and exec and must not dlopen.
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn`: the kernel SIGKILLs the child when the process that started it dies.
    Call it in the thread that starts the child (the signal follows the creating thread)."""
    parent = os.getpid()

    def arm() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return arm
