"""Every example of the parallel-steps guide, as workflows of the example shop.

Loaded by durable_django's autodiscovery (like ``admin.py``). Each section names the guide's
example it translates; ``python manage.py run_examples`` runs them all. Steps call the small
services of ``shop.services``, so every branch does real work on real rows, and every outcome
(a declined card, an empty warehouse, a bouncing address) is decided by the data. The examples
that wait (for an approval, a webhook, a sleep) are in ``shop.waiting``, the saga whose completed
steps are undone when a later one fails in ``shop.sagas``, the stock report that a schedule starts
in ``shop.reports``, a delayed start and a workflow timeout in ``shop.timing``; all are registered
from here.
"""

from __future__ import annotations

import logging
from typing import Any

from durable_django import (
    assign,
    call_workflow,
    error,
    goto,
    ok,
    parallel,
    parallel_ok,
    parallel_result,
    parallel_results,
    schedule,
    step,
    workflow,
)

from . import (
    control_flow,  # noqa: F401 - registers the foreach / branch / start_child examples
    reports,  # noqa: F401 - registers the stock report, which the schedule below starts
    sagas,  # noqa: F401 - registers the saga, whose steps are undone when a later one fails
    timing,  # noqa: F401 - registers the delayed reminder and the workflow with a timeout
    waiting,  # noqa: F401 - registers the workflows that wait
)
from .models import Order
from .services import (
    analytics,
    billing,
    external_api,
    inventory,
    mailer,
    notifications,
    orders,
    payment,
    shipping,
    sms,
    users,
    workspaces,
)

Ctx = dict[str, Any]
Result = tuple[Any, ...]

# What a step logs while it runs is kept with its attempt (DURABLE["CAPTURE_LOGS"]): the admin
# shows it on the step's row, and run_examples prints it under the step.
logger = logging.getLogger(__name__)


# -- onboard_user: a parallel block and its __results__ -------------------------------------------


def create_user(data: Ctx) -> Result:
    user = users.create(data)
    return ok({"user_id": user.id})


def send_welcome_email(data: Ctx) -> Result:
    mailer.send_welcome(data["user_id"])
    return ok({"email_sent": True})


def provision_workspace(data: Ctx) -> Result:
    workspace = workspaces.create(data["user_id"])
    return ok({"workspace_id": workspace.id})


def setup_billing(data: Ctx) -> Result:
    billing.setup(data["user_id"])
    return ok({"billing_ready": True})


def complete_onboarding(data: Ctx) -> Result:
    # The block is fail_fast (the default), so a failed branch already failed the run; this
    # check is the guide's safeguard for a block that lets failures through.
    results = data["__results__"]
    match results["send_welcome_email"], results["provision_workspace"]:
        case ("ok", _), ("ok", _):
            return ok(assign(data, "onboarded", True))
        case _:
            return error("Onboarding incomplete")


onboard_user = workflow(
    "onboard_user",
    [
        step("create_user", create_user),
        # These three steps run concurrently.
        parallel(
            step("send_welcome_email", send_welcome_email),
            step("provision_workspace", provision_workspace),
            step("setup_billing", setup_billing),
        ),
        step("complete", complete_onboarding),
    ],
)


# -- checkout: the parallel_* helpers, and direct access to __results__ with goto ----------------


def authorize_payment(ctx: Ctx) -> Result:
    match payment.authorize(ctx["order_id"]):
        case ("ok", auth):
            logger.info("order %s: card authorized, code %s", ctx["order_id"], auth.code)
            return ok({"id": auth.id, "code": auth.code})
        case ("error", reason):
            logger.info("order %s: card not authorized (%s)", ctx["order_id"], reason)
            return error(reason)


def schedule_delivery(ctx: Ctx) -> Result:
    return _schedule(ctx["order_id"])


def _schedule(order_id: int) -> Result:
    match shipping.schedule(order_id):
        case ("ok", shipment):
            return ok({"status": shipment.status, "tracking_number": shipment.tracking_number})
        case ("error", reason):
            return error(reason)


def handle_results(ctx: Ctx) -> Result:
    # The helpers read the context of the running step, so they need no argument.
    results = parallel_results()  # {"payment": ("ok", {...}), "delivery": ("error", "not_found")}
    match parallel_result("payment"):
        case ("ok", auth):
            payment_note = f"authorized with code {auth['code']}"
        case ("error", reason):
            payment_note = f"not authorized: {reason}"
    return ok(
        {
            "summary": {
                "branches": sorted(results),
                "payment": payment_note,
                "delivery_scheduled": parallel_ok("delivery"),
            }
        }
    )


def record_payment(ctx: Ctx) -> Result:
    match ctx["__results__"]["payment"]:
        case ("ok", auth):
            return ok(assign(ctx, "payment_id", auth["id"]))
        case ("error", _):
            return goto("handle_payment_failure", ctx)


def notify_customer(ctx: Ctx) -> Result:
    order = Order.objects.select_related("account").get(pk=ctx["order_id"])
    mailer.deliver(order.account, f"Order {order.reference}: {ctx['order_status']}", "Thank you for shopping with us.")
    return ok({"customer_notified": True})


checkout = workflow(
    "checkout",
    [
        step("open_checkout", lambda data: ok({"order_id": data["order_id"]})),
        parallel(
            step("payment", authorize_payment),
            step("delivery", schedule_delivery),
            on_error="complete_all",
        ),
        step("handle_results", handle_results),
        step("record_payment", record_payment),
        # Jump over the failure handler: steps otherwise run in the order they are listed.
        step("confirm_order", lambda ctx: goto("notify_customer", {"order_status": "confirmed"})),
        step("handle_payment_failure", lambda ctx: ok({"order_status": "payment_failed"})),
        step("notify_customer", notify_customer),
    ],
)


# -- deliver_order: into transforms the results, jumps or fails ----------------------------------


def combine_payment_and_delivery(ctx: Ctx, results: Ctx) -> Result:
    # ctx is the context before the block (the branches cannot change it);
    # results is {step name: ("ok", data) | ("error", reason)}.
    match results["payment"], results["delivery"]:
        case ("ok", auth), ("ok", delivery):
            # Becomes the whole context of the next step: no __results__ key.
            return ok({**ctx, "payment_id": auth["id"], "delivery_status": delivery["status"]})
        case ("ok", _), ("error", "not_found"):
            return goto("handle_backorder", ctx)
        case _:
            return error("Critical failure")


deliver_order = workflow(
    "deliver_order",
    [
        step("start_delivery", lambda data: ok({"order_id": data["order_id"]})),
        parallel(
            step("payment", authorize_payment),
            step("delivery", schedule_delivery),
            into=combine_payment_and_delivery,
        ),
        step("confirm_delivery", lambda ctx: goto("notify_customer", {"order_status": "confirmed"})),
        step("handle_backorder", lambda ctx: ok({"backordered": True, "order_status": "backordered"})),
        step("notify_customer", notify_customer),
    ],
)


# -- order_summary: returns= renames a branch's key in __results__ -------------------------------


def fetch_order(ctx: Ctx) -> Result:
    order = Order.objects.get(pk=ctx["order_id"])
    return ok({"items": [{"sku": order.sku, "quantity": order.quantity}]})


def fetch_user(ctx: Ctx) -> Result:
    return ok({"name": users.get(ctx["user_id"]).name})


def summarize_order(ctx: Ctx) -> Result:
    match parallel_result("order"), parallel_result("user"):
        case ("ok", order), ("ok", user):
            count = sum(item["quantity"] for item in order["items"])
            return ok({"summary": f"{user['name']} ordered {count} item(s)"})
        case _:
            return error("order or user missing")


order_summary = workflow(
    "order_summary",
    [
        parallel(
            step("fetch_order", fetch_order, returns="order"),
            step("fetch_user", fetch_user, returns="user"),
        ),
        # __results__ is now {"order": ("ok", {"items": [...]}), "user": ("ok", {"name": ...})}.
        step("summarize", summarize_order),
    ],
)


# -- notify_user: fail_fast, then complete_all -----------------------------------------------------


def critical_task(ctx: Ctx) -> Result:
    if users.get(ctx["user_id"]) is None:
        return error("account_not_found")
    return ok(ctx)


def send_sms(ctx: Ctx) -> Result:
    match sms.send(ctx["user_id"]):
        case ("ok", _):
            return ok({"sms_sent": True})
        case ("error", reason):
            return error(reason)  # kept in __results__


def send_email(ctx: Ctx) -> Result:
    match mailer.send(ctx["user_id"]):
        case ("ok", _):
            return ok({"email_sent": True})
        case ("error", reason):
            return error(reason)  # kept in __results__


def check_notifications(ctx: Ctx) -> Result:
    results = ctx["__results__"]
    sms_ok = results["send_sms"][0] == "ok"
    email_ok = results["send_email"][0] == "ok"
    if sms_ok and email_ok:
        return ok(assign(ctx, "all_sent", True))
    if sms_ok or email_ok:
        return ok(assign(ctx, "partial_sent", True))
    return error("All notifications failed")


notify_user = workflow(
    "notify_user",
    [
        # Fail fast (the default): the run fails on the first error.
        parallel(step("critical_task", critical_task), on_error="fail_fast"),
        # Complete all: every branch finishes; the next step handles the failures.
        parallel(step("send_sms", send_sms), step("send_email", send_email), on_error="complete_all"),
        step("check_notifications", check_notifications),
    ],
)


# -- dashboard_data: partial failure handled by the next step -----------------------------------


def fetch_orders(ctx: Ctx) -> Result:
    # "orders_limit" in the input lets the demo ask for an oversized page, which the orders
    # service rejects: the partial failure the dashboard has to cope with.
    match orders.recent(ctx.get("orders_limit", 10), user_id=ctx["user_id"]):
        case ("ok", recent):
            return ok({"orders": recent})
        case ("error", reason):
            return error(reason)


def build_dashboard(ctx: Ctx) -> Result:
    results = ctx["__results__"]
    match results["fetch_orders"]:
        case ("ok", data):
            recent = data["orders"]
        case ("error", _):
            recent = []
    match results["fetch_metrics"]:
        case ("ok", data):
            metrics = data["metrics"]
        case ("error", _):
            metrics = {}
    return ok(
        {
            "dashboard": {"orders": recent, "metrics": metrics},
            "has_errors": any(result[0] == "error" for result in results.values()),
        }
    )


dashboard_data = workflow(
    "dashboard_data",
    [
        step("init", lambda data: ok({"user_id": data["user_id"]})),
        parallel(
            step("fetch_orders", fetch_orders),
            step("fetch_metrics", lambda ctx: ok({"metrics": analytics.daily_metrics()})),
            step("fetch_notifications", lambda ctx: ok({"notifications": notifications.unread(ctx["user_id"])})),
            on_error="complete_all",
        ),
        step("build_dashboard", build_dashboard),
    ],
)


# -- order_processing: into with goto, exactly as in the guide ------------------------------------


def check_inventory(ctx: Ctx) -> Result:
    match inventory.check(ctx["order_id"]):
        case ("ok", item):
            return ok({"available": item.quantity > 0, "quantity": item.quantity})
        case ("error", reason):
            return error(reason)


def check_payment(ctx: Ctx) -> Result:
    match payment.authorize(ctx["order_id"]):
        case ("ok", auth):
            return ok({"authorized": True, "auth_code": auth.code})
        case ("error", reason):
            return error(reason)


def decide_order(ctx: Ctx, results: Ctx) -> Result:
    match results["check_inventory"], results["check_payment"]:
        case ("ok", inv), ("ok", pay) if inv["available"] and pay["authorized"]:
            return ok({**ctx, "inventory": inv, "payment": pay, "ready": True})
        case ("ok", _), ("error", "card_declined"):
            return goto("handle_payment_issue", ctx)
        case ("error", "out_of_stock"), _:
            return goto("handle_backorder", ctx)
        case _:
            return error("Order validation failed")


# The step order is the guide's. Steps run in the order they are listed and a goto only says
# where to continue, so a fulfilled order also passes through both handlers below, and a
# declined card also reaches handle_backorder. The final contexts show it (see the tests);
# checkout and deliver_order above show the usual fix, a goto that skips the handlers.
order_processing = workflow(
    "order_processing",
    [
        step("validate", lambda data: ok({"order_id": data["order_id"]})),
        parallel(
            step("check_inventory", check_inventory),
            step("check_payment", check_payment),
            into=decide_order,
        ),
        step("fulfill_order", lambda ctx: ok(assign(ctx, "fulfilled", True))),  # only reached if both checks passed
        step("handle_payment_issue", lambda ctx: ok(assign(ctx, "needs_payment_retry", True))),
        step("handle_backorder", lambda ctx: ok(assign(ctx, "backordered", True))),
    ],
)


# -- sync_external_data: a retried branch --------------------------------------------------------


def external_api_call(ctx: Ctx) -> Result:
    # Raising is enough: the engine stores the exception as the failed attempt and retries.
    result = external_api.fetch_data(ctx["request_key"], fail_first=ctx.get("fail_first", 0))
    return ok({"external": result})


def combine_data(ctx: Ctx) -> Result:
    # fail_fast: reaching this step means both branches succeeded.
    _, fetched = parallel_result("external_api_call")
    _, local = parallel_result("quick_local_task")
    return ok({"rate": fetched["external"]["rate"], **local["local"]})


sync_external_data = workflow(
    "sync_external_data",
    [
        parallel(
            # The guide gives no base, and the default (1 s, doubled per attempt: 1, 2, 4, 8 s)
            # would make the demo wait 15 s for a failing API. 0.2 s gives 0.2, 0.4, 0.8, 1.6 s.
            step(
                "external_api_call",
                external_api_call,
                retry={"max_attempts": 5, "backoff": "exponential", "base": 0.2},
            ),
            step("quick_local_task", lambda ctx: ok({"local": {"units_in_stock": inventory.total_units()}})),
        ),
        step("combine", combine_data),
    ],
)


# -- place_order: child workflows inside parallel branches ---------------------------------------


def capture(ctx: Ctx) -> Result:
    match payment.charge(ctx["amount"]):
        case ("ok", charge):
            return ok({"charge_id": charge.id, "charge_status": charge.status})
        case ("error", reason):
            return error(reason)


def check_stock(ctx: Ctx) -> Result:
    match inventory.check(ctx["order"]):
        case ("ok", item):
            return ok({"sku": item.sku})
        case ("error", reason):
            return error(reason)


payment_workflow = workflow(
    "payment",
    [
        step("capture", capture),
        step("issue_receipt", lambda ctx: ok({"receipt": f"R-{ctx['charge_id']:06d}"})),
    ],
)

shipping_workflow = workflow(
    "shipping",
    [
        step("check_stock", check_stock),
        step("create_shipment", lambda ctx: _schedule(ctx["order"])),
    ],
)


def pay_with_child(data: Ctx) -> Result:
    # The child runs inline, inside this branch, as a run of its own linked to this one.
    match call_workflow(payment_workflow, {"amount": data["total"]}, ref="payment"):
        case ("ok", result):
            return ok(assign(data, "payment", result))
        case ("error", reason):
            return error(reason)


def ship_with_child(data: Ctx) -> Result:
    match call_workflow(shipping_workflow, {"order": data["order_id"]}, ref="shipping"):
        case ("ok", result):
            return ok(assign(data, "shipping", result))
        case ("error", reason):
            return error(reason)


def load_order(data: Ctx) -> Result:
    order = Order.objects.get(reference=data["reference"])
    return ok({"order_id": order.pk, "total": order.total_cents})


place_order = workflow(
    "place_order",
    [
        step("load_order", load_order),
        parallel(
            step("payment", pay_with_child),
            step("shipping", ship_with_child),
            on_error="complete_all",
        ),
        step("summarize", lambda ctx: ok({"paid": parallel_ok("payment"), "shipped": parallel_ok("shipping")})),
    ],
)


# -- a schedule: the stock report every Monday at 07:00, Berlin time -------------------------------

schedule("weekly_stock_report", "stock_report", "0 7 * * 1", timezone="Europe/Berlin", input={"threshold": 5})
