"""Control flow in the example shop: a foreach over an order's lines, a branch on the shipping
kind, and an audit trail written by a child run the order does not wait for.

``order_fulfilment`` charges every line of an order (one branch per line, at most four at once;
``into`` sums the charges), ships it the way the customer chose (a branch block: a courier, a
label, or nothing to do for a pick-up in store) and starts the ``audit_trail`` child with
``start_child``: the order's run completes without waiting for it.
"""

from __future__ import annotations

from typing import Any

from durable_django import branch, error, foreach, ok, start_child, step, workflow

from .models import InventoryItem
from .services import audit, payment, shipping

Ctx = dict[str, Any]
Result = tuple[Any, ...]


def charge_line(data: Ctx) -> Result:
    line = data["line"]
    if not InventoryItem.objects.filter(sku=line["sku"]).exists():
        return error({"type": "unknown_sku", "sku": line["sku"]})
    match payment.charge(line["unit_cents"] * line["quantity"]):
        case ("ok", charge):
            return ok({"charge_id": charge.pk, "amount_cents": charge.amount_cents})
        case (_, reason):
            return error(reason)


def sum_charges(data: Ctx, results: list[tuple[str, Any]]) -> Result:
    # Results are in line order, whichever worker charged which line when.
    failed = [index for index, (status, _) in enumerate(results) if status == "error"]
    if failed:
        return error({"type": "lines_not_charged", "lines": failed})
    return ok(
        {**data, "charged_cents": sum(charge["amount_cents"] for _, charge in results), "lines_charged": len(results)}
    )


def book_courier(data: Ctx) -> Result:
    match shipping.schedule(data["order_id"]):
        case ("ok", shipment):
            shipment.carrier = "courier"
            shipment.save(update_fields=["carrier"])
            return ok({"tracking_number": shipment.tracking_number, "carrier": "courier"})
        case (_, reason):
            return error(reason)


def print_label(data: Ctx) -> Result:
    match shipping.schedule(data["order_id"]):
        case ("ok", shipment):
            return ok({"tracking_number": shipment.tracking_number, "carrier": shipment.carrier})
        case (_, reason):
            return error(reason)


def start_audit(data: Ctx) -> Result:
    detail = {"charged_cents": data["charged_cents"], "shipping": data["shipping"]}
    child = start_child(
        "audit_trail", {"order_id": data["order_id"], "event": "fulfilled", "detail": detail}, ref="fulfilled"
    )
    return ok({"audit_run": str(child.pk), "fulfilled": True})


def write_audit_entry(data: Ctx) -> Result:
    entry = audit.record(data["order_id"], data["event"], data["detail"])
    return ok({"audit_entry": entry.pk})


workflow(
    "order_fulfilment",
    [
        foreach(
            "charge_lines",
            "lines",
            charge_line,
            item_key="line",
            max_concurrency=4,
            on_error="complete_all",
            into=sum_charges,
            retry={"max_attempts": 3, "base": 0.2},
        ),
        branch(
            "ship",
            "shipping",
            {
                "express": [step("book_courier", book_courier)],
                "standard": [step("print_label", print_label)],
                "pickup": [],
            },
        ),
        step("record_fulfilment", start_audit),
    ],
)

workflow("audit_trail", [step("write_audit_entry", write_audit_entry, retry={"max_attempts": 5})])
