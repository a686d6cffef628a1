"""When to restart a child that exited, and when to give up (a crash loop)."""

from collections import deque
from dataclasses import dataclass, field

CRASH_LOOP_EXITS = 20
CRASH_LOOP_WINDOW_S = 60.0
FIRST_DELAY_S = 0.05
MAX_DELAY_S = 1.0


class CrashLoop(RuntimeError):
    """A child exited too often: the run ends (exit 1) with this message."""


@dataclass
class Restarts:
    """Exits of one child (a worker slot, or Envoy) within the crash-loop window."""

    name: str
    exits: deque[float] = field(default_factory=deque)
    total: int = 0

    def record_exit(self, now: float) -> float:
        """The delay before the restart; CrashLoop when this exit is one too many."""
        self.exits.append(now)
        self.total += 1
        while self.exits and now - self.exits[0] > CRASH_LOOP_WINDOW_S:
            self.exits.popleft()
        recent = len(self.exits)
        if recent >= CRASH_LOOP_EXITS:
            raise CrashLoop(
                f"{self.name} exited {recent} times within {CRASH_LOOP_WINDOW_S:.0f} s: "
                "giving up (see its messages above)"
            )
        # Exponential in the exits of the last minute: one crash costs 50 ms, a loop ~1 s each.
        return float(min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** (recent - 1)))
