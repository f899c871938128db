"""A saga: a trip booked in steps, whose completed steps are undone when a later one fails.

``reserve_room`` takes rooms off the hotel's shelf, ``charge_card`` captures the price and
``confirm_flight`` asks the airline for a seat. The first two each name a ``compensate``
function: when the run fails after them (the flight is full), the engine calls
``refund_card``, then ``release_room`` (latest completed step first), each with the context as
it was right after its step and ``ctx["__error__"]``, the run's error. The run then ends
``failed`` with ``run.compensation`` saying how the compensations went: ``completed``, or
``failed`` when one of them failed even after its retries (a card the provider will not refund;
the room is released all the same). See docs/control-flow.md.
"""

from __future__ import annotations

from typing import Any

from durable_django import error, ok, step, workflow

from .services import airline, inventory, payment

Ctx = dict[str, Any]
Result = tuple[Any, ...]


def reserve_room(ctx: Ctx) -> Result:
    status, item = inventory.reserve(ctx["room"], ctx["nights"])
    if status == "error":
        return error(item)
    return ok({"rooms_reserved": ctx["nights"]})


def release_room(ctx: Ctx) -> Result:
    # The context as it was right after reserve_room: what it reserved is there.
    item = inventory.release(ctx["room"], ctx["rooms_reserved"])
    return ok({"rooms_free": item.quantity, "because": ctx["__error__"]["reason"]})


def charge_card(ctx: Ctx) -> Result:
    status, charge = payment.charge(ctx["amount_cents"])
    if status == "error":
        return error(charge)
    return ok({"charge_id": charge.pk})


def refund_card(ctx: Ctx) -> Result:
    # Raises RefundRefused for a card the provider will not refund: the compensation fails.
    charge = payment.refund(ctx["charge_id"], ctx["card"])
    return ok({"charge_status": charge.status})


def confirm_flight(ctx: Ctx) -> Result:
    status, value = airline.confirm_seat(ctx["flight"], ctx["passenger"])
    if status == "error":
        return error(value)
    return ok({"confirmation": value})


book_trip = workflow(
    "book_trip",
    [
        step("reserve_room", reserve_room, compensate=release_room),
        # The compensation follows its step's retry policy: a refused refund is tried twice.
        step(
            "charge_card",
            charge_card,
            compensate=refund_card,
            retry={"max_attempts": 2, "backoff": "constant", "base": 0.1, "jitter": False},
        ),
        step("confirm_flight", confirm_flight),
        step("booked", lambda ctx: ok({"booked": True})),
    ],
)
