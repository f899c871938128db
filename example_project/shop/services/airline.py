"""Airline: confirming a seat on a flight with the (imaginary) airline."""

from __future__ import annotations

# The flight the airline always reports as full.
FULL_FLIGHT = "XX404"


def confirm_seat(flight: str, passenger: str) -> tuple[str, str]:
    """``("ok", confirmation code)``, or ``("error", "flight_full")`` for the full flight."""
    if flight == FULL_FLIGHT:
        return ("error", "flight_full")
    return ("ok", f"{flight}-{passenger[:3].upper()}-1")
