"""slotfleet.cli."""
