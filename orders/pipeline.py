"""The order's canvas, built from the workflow by task name (no business logic, no tasks or
services imported):

    authorize_payment -> group(check_cart_line x lines)  ==join at the database==>  confirm_order
    (each arrow sent by the step before it, once it has moved the order on: a declined order
    sends nothing further)

The cart check fans out one task per line; its join is the order's row, not a result backend's
chord counter: the line check that finds every line checked moves the order on under the row
lock and sends `confirm_order` (orders/services/cart.py). A duplicated, lost or re-run line check
therefore never stalls the order nor verifies it twice. Recovery and replay enter the cart step
through `verify_cart`, which checks any line not checked yet itself.

Every signature is immutable and carries the order id and the dispatch generation `run`: a step
re-reads the truth from the database, and a message of an older generation does nothing. The
outcome notification is not a link: it is written with the terminal status (services/outcomes.py).
"""

from celery import chain, group, signature
from celery.canvas import Signature

from orders import workflow


def _step(task_name: str, **kwargs) -> Signature:
    return signature(task_name, kwargs=kwargs, immutable=True)


def cart_check(*, order_id: str, run: int, line_ids: tuple[int, ...], lane: str) -> Signature:
    return group(
        _step(workflow.CHECK_CART_LINE, order_id=order_id, line_id=line_id, run=run, lane=lane)
        for line_id in line_ids
    )


def confirmation(*, order_id: str, run: int, lane: str) -> Signature:
    return _step(workflow.CONFIRM_ORDER, order_id=order_id, run=run, lane=lane)


def order_canvas(
    *,
    order_id: str,
    run: int,
    from_step: str,
    line_ids: tuple[int, ...],
    lane: str = workflow.SINGLE_LANE,
) -> Signature:
    """The order's canvas from `from_step` (a replay or a recovery names it)."""
    if from_step == workflow.SETTLE:
        return _step(workflow.SETTLE_ORDER, order_id=order_id, run=run, lane=lane)
    if from_step == workflow.AUTHORIZE:
        # The authorization sends the cart check itself once it authorized: a declined order
        # skips the steps it does not need.
        return _step(workflow.AUTHORIZE_PAYMENT, order_id=order_id, run=run, lane=lane)
    if from_step == workflow.CHECK_CART:
        return chain(
            _step(workflow.VERIFY_CART, order_id=order_id, run=run, lane=lane),
            confirmation(order_id=order_id, run=run, lane=lane),
        )
    if from_step == workflow.CONFIRM:
        return confirmation(order_id=order_id, run=run, lane=lane)
    raise ValueError(f"unknown step {from_step!r}; steps are {', '.join(workflow.STEPS)}")


def batch_canvas(dispatches) -> Signature:
    """Every order of a batch at once; the batch's summary is written when its last order ends."""
    return group(
        order_canvas(
            order_id=d.order_id,
            run=d.run,
            from_step=d.from_step,
            line_ids=d.line_ids,
            lane=d.lane,
        )
        for d in dispatches
    )
