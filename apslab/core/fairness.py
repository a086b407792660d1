"""Service and the service difference between backlogged tenants (the VTC paper's measure).

A tenant's *service* is what the Virtual Token Counter charges for (Sheng et al., OSDI'24):
``input_weight * P / share`` when a request is first admitted (its prompt; recomputation after a
preemption is not service) and ``output_weight / share`` for every output token, when it is
emitted (a static batch emits all its output when it forms). A tenant is *backlogged* while it
has waiting requests.

The *service difference* of two tenants over an interval in which both are backlogged throughout
is the difference of the service each received in it; the measure reported is its largest
absolute value over every such interval of every pair of tenants. For a pair backlogged
together since ``b`` it is ``|(S_f(t) - S_f(b)) - (S_g(t) - S_g(b))|`` at any later ``t`` while
both stay backlogged, so :class:`ServiceDifference` keeps, per active pair, the baseline
``S_f(b) - S_g(b)`` and evaluates the difference whenever service changes (at the end of each
instant, once every event of that instant has happened) and when a pair ends.

The tracker takes the same calls a policy does (``admitted``, ``emitted``) plus ``backlog`` and
``settle``; it reads no clock (``settle`` is given the time only to record the curve).
"""

from __future__ import annotations

from collections.abc import Sequence

#: Beyond this many tenants the tracker is not run (its pairs grow as the square).
MAX_TRACKED_TENANTS = 64


class ServiceDifference:
    """The largest service difference between two backlogged tenants, tracked online."""

    def __init__(self, shares: Sequence[float], input_weight: float = 1.0,
                 output_weight: float = 2.0, keep_curve: bool = False) -> None:
        count = len(shares)
        self.shares = [float(s) for s in shares]
        self.input_weight = float(input_weight)
        self.output_weight = float(output_weight)
        self.service = [0.0] * count  # cumulative weighted service, per tenant
        self.backlogged = [False] * count
        self.baseline = [[0.0] * count for _ in range(count)]  # S_f(b) - S_g(b) per active pair
        self.changed: set[int] = set()
        self.max_difference = 0.0
        self.curve: list[tuple[float, float]] | None = [] if keep_curve else None
        self._ended = -1.0  # the largest difference of a pair that ended in this instant

    # -- service ------------------------------------------------------------------------------

    def admitted(self, tenant: int, prompt_tokens: int) -> None:
        """A request's first admission: its prompt is service."""
        self.service[tenant] += self.input_weight * prompt_tokens / self.shares[tenant]
        self.changed.add(tenant)

    def emitted(self, tenant: int) -> None:
        """One output token."""
        self.service[tenant] += self.output_weight / self.shares[tenant]
        self.changed.add(tenant)

    # -- backlog ------------------------------------------------------------------------------

    def backlog(self, tenant: int, backlogged: bool) -> None:
        """The tenant starts (True) or stops (False) having waiting requests."""
        if backlogged == self.backlogged[tenant]:
            return
        service, baseline = self.service, self.baseline
        if backlogged:
            for other, active in enumerate(self.backlogged):
                if active:
                    baseline[tenant][other] = service[tenant] - service[other]
                    baseline[other][tenant] = service[other] - service[tenant]
            self.backlogged[tenant] = True
        else:
            ended = self._evaluate(tenant)
            if ended > self._ended:
                self._ended = ended
            self.backlogged[tenant] = False

    # -- evaluation -----------------------------------------------------------------------------

    def _evaluate(self, tenant: int) -> float:
        """Update the maximum with every active pair of ``tenant``; returns the largest now."""
        if not self.backlogged[tenant]:
            return 0.0
        largest = self._current(tenant)
        if largest > self.max_difference:
            self.max_difference = largest
        return largest

    def settle(self, now_s: float) -> None:
        """End of an instant: evaluate the pairs of every tenant whose service changed. The
        curve gets the largest difference of the instant: among the pairs still backlogged,
        and of any pair that ended during it (so its maximum is ``max_difference``)."""
        if not self.changed and self._ended < 0:
            return
        for tenant in sorted(self.changed):
            self._evaluate(tenant)
        self.changed.clear()
        if self.curve is not None:
            current = max((self._current(t) for t, on in enumerate(self.backlogged) if on),
                          default=0.0)
            self.curve.append((now_s, max(current, self._ended)))
        self._ended = -1.0

    def _current(self, tenant: int) -> float:
        """The largest difference of ``tenant``'s active pairs now (0.0 without any)."""
        service, row = self.service, self.baseline[tenant]
        return max((abs(service[tenant] - service[other] - row[other])
                    for other, active in enumerate(self.backlogged)
                    if active and other != tenant), default=0.0)
