"""What the core needs from a fleet: its members, its size, deletion marks, a resize.

The operator implements :class:`FleetPort` with a Queue's pods and its ``/scale``
(``slotfleet.operator.fleetport``); the local fleet with worker processes
(``slotfleet.fleet.runner``). The core (:func:`slotfleet.control.size_fleet`) calls it
in one order every tick: mark busy members, let members chosen for removal retire,
then resize.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from slotfleet.scaling import Decision


class FleetPort(Protocol):
    """One queue's fleet as the core sees it."""

    def size(self) -> int:
        """The size the fleet is set to now (``spec.replicas``; processes started and not
        told to stop)."""
        ...

    def members(self) -> Sequence[str]:
        """Worker ids of the members not leaving (pods without a deletion timestamp,
        processes not told to stop)."""
        ...

    async def mark(self, busy: Mapping[str, int]) -> bool:
        """Make the fleet remove idle members first, given busy slots per worker id;
        return whether every mark was already in place (nothing changed)."""
        ...

    def retire(self, decision: Decision) -> Decision:
        """The decision as it may be carried out now. Before a smaller size, a fleet
        whose members could claim work between the resize and their stop chooses them
        first and holds the size until they have stopped claiming
        (``slotfleet.scaling.retire``); a fleet without that race returns it unchanged."""
        ...

    async def resize(
        self, decision: Decision, busy: Mapping[str, int], *, overridden: bool
    ) -> Decision:
        """Set the fleet to ``decision.replicas`` (removing idle members first);
        ``overridden``: the size had been changed outside the core. Returns the decision
        as reported (its reason may say what was put back)."""
        ...
