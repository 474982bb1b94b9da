"""Injected failures and request accounting for the fake GitLab.

Faults come two ways: at random with the probabilities of ``--faults 5xx=0.1,429=0.05,reset=0.05,slow=0.05``
(reproducible with a seed), and scripted by tests ("the next commit POST is answered 502 after it was
applied"), so that a test of the nastiest case does not depend on luck.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from dataclasses import dataclass, field

KINDS = ("5xx", "429", "reset", "slow")


@dataclass
class Fault:
    kind: str  # one of KINDS
    # For writes: fail only after the change was applied (the answer is lost, the commit landed).
    after_apply: bool = False
    status: int = 503  # for 5xx
    delay: float = 0.0  # for slow


@dataclass
class _Scripted:
    fault: Fault
    endpoint: str  # "POST /projects/:id/repository/commits", or "*" for any
    times: int


def parse_spec(spec: str | None) -> dict[str, float]:
    """``"5xx=0.1,reset=0.05"`` → ``{"5xx": 0.1, "reset": 0.05}``; raises ValueError on nonsense."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        kind, _, value = part.partition("=")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(KINDS)})")
        rate = float(value)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate {part!r} is not a probability")
        rates[kind] = rate
    if sum(rates.values()) > 1.0:
        raise ValueError("fault probabilities add up to more than 1")
    return rates


class FaultPlan:
    """Decides, per request, whether and how it fails."""

    def __init__(self, spec: str | None = None, seed: int | None = 0, *, slow_range: tuple[float, float] = (0.5, 2.0)):
        self.rates = parse_spec(spec)
        self.slow_range = slow_range
        self._random = random.Random(seed)
        self._scripted: list[_Scripted] = []
        self._lock = threading.Lock()
        self.injected: dict[str, int] = defaultdict(int)

    def set_rates(self, spec: str | None) -> None:
        with self._lock:
            self.rates = parse_spec(spec)

    def script(self, kind: str, endpoint: str = "*", *, times: int = 1, after_apply: bool = False,
               status: int = 502, delay: float = 1.0) -> None:
        """Make the next ``times`` requests to ``endpoint`` (``"METHOD /template"``) fail with ``kind``."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._scripted.append(_Scripted(Fault(kind, after_apply, status, delay), endpoint, times))

    def clear(self) -> None:
        with self._lock:
            self._scripted.clear()
            self.rates = {}

    def draw(self, endpoint: str, *, is_write: bool) -> Fault | None:
        with self._lock:
            for scripted in self._scripted:
                if scripted.endpoint in ("*", endpoint):
                    scripted.times -= 1
                    if scripted.times <= 0:
                        self._scripted.remove(scripted)
                    self.injected[scripted.fault.kind] += 1
                    return scripted.fault
            roll = self._random.random()
            for kind in KINDS:
                rate = self.rates.get(kind, 0.0)
                if roll < rate:
                    fault = Fault(
                        kind,
                        # Half of the lost answers of writes come after the write was applied.
                        after_apply=is_write and kind in ("5xx", "reset") and self._random.random() < 0.5,
                        status=self._random.choice((500, 502, 503)),
                        delay=self._random.uniform(*self.slow_range),
                    )
                    self.injected[kind] += 1
                    return fault
                roll -= rate
            return None


@dataclass
class _Counter:
    count: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class Stats:
    """Requests, and body bytes in and out, per ``"METHOD /endpoint-template"``."""

    _by_endpoint: dict[str, _Counter] = field(default_factory=lambda: defaultdict(_Counter))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, endpoint: str, *, bytes_in: int = 0, bytes_out: int = 0, new_request: bool = True) -> None:
        with self._lock:
            counter = self._by_endpoint[endpoint]
            counter.count += 1 if new_request else 0
            counter.bytes_in += bytes_in
            counter.bytes_out += bytes_out

    def reset(self) -> None:
        with self._lock:
            self._by_endpoint.clear()

    def snapshot(self, faults: FaultPlan | None = None) -> dict:
        with self._lock:
            by_endpoint = {k: vars(v).copy() for k, v in sorted(self._by_endpoint.items())}
        methods: dict[str, int] = defaultdict(int)
        for endpoint, counter in by_endpoint.items():
            methods[endpoint.split(" ", 1)[0]] += counter["count"]
        return {
            "total": sum(c["count"] for c in by_endpoint.values()),
            "bytes_in": sum(c["bytes_in"] for c in by_endpoint.values()),
            "bytes_out": sum(c["bytes_out"] for c in by_endpoint.values()),
            "by_method": dict(methods),
            "requests": {k: v["count"] for k, v in by_endpoint.items()},
            "by_endpoint": by_endpoint,
            "faults_injected": dict(faults.injected) if faults else {},
        }
