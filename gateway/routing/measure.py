"""One deployment's live figures: exponentially weighted averages of time to first token, output tokens per second
after the first token and output tokens per answer, each with the time of its last sample so that a figure nobody
has renewed for a while stops counting (the deployment is then explored again)."""

from __future__ import annotations

import math

# Weight of a new sample when samples come close together: about the last three answers carry two thirds.
ALPHA = 0.3
# Seconds over which an old average gives way: after a gap of TAU a new sample weighs 1 - 0.7/e (74 %), after
# several TAU it replaces the average, so a deployment measured again after a quiet spell is seen as it is now.
TAU = 30.0
# Seconds after its last sample when a figure counts as unmeasured: the deployment gets exploration traffic again,
# which is how a deployment that was slow and recovered is found.
HORIZON = 60.0
_NEVER = -math.inf


class Measure:
    """Mutable, per deployment, shared by every group that names it; updated once per answer."""

    __slots__ = ("output", "output_at", "rate", "rate_at", "samples", "ttft", "ttft_at")

    def __init__(self) -> None:
        self.ttft = 0.0  # seconds
        self.ttft_at = _NEVER
        self.rate = 0.0  # output tokens per second after the first token
        self.rate_at = _NEVER
        self.output = 0.0  # output tokens per answer
        self.output_at = _NEVER
        self.samples = 0

    def observe(self, now: float, ttft: float | None, rate: float | None, output: int | None) -> None:
        """One answer's figures (None: not measured by this answer)."""
        if ttft is not None and ttft >= 0.0:
            self.ttft = _average(self.ttft, self.ttft_at, ttft, now)
            self.ttft_at = now
            self.samples += 1
        if rate is not None and rate > 0.0:
            self.rate = _average(self.rate, self.rate_at, rate, now)
            self.rate_at = now
        if output is not None and output >= 0:
            self.output = _average(self.output, self.output_at, float(output), now)
            self.output_at = now

    def latency(self, now: float) -> float | None:
        """The time to first token, or None when it is unmeasured or older than HORIZON."""
        return self.ttft if now - self.ttft_at <= HORIZON else None

    def tokenrate(self, now: float) -> float | None:
        return self.rate if now - self.rate_at <= HORIZON else None

    def expected_output(self, now: float) -> float | None:
        return self.output if now - self.output_at <= HORIZON else None


def _average(old: float, old_at: float, sample: float, now: float) -> float:
    if old_at == _NEVER:
        return sample
    weight = 1.0 - (1.0 - ALPHA) * math.exp(-max(now - old_at, 0.0) / TAU)
    return old + weight * (sample - old)
