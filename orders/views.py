"""The live tracking page (server-rendered; a little JavaScript polls the JSON API)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from . import selectors, workflow


@login_required
def order_tracking(request, order_id):
    order = selectors.order_get_for_user(user=request.user, order_id=order_id)
    return render(
        request,
        "orders/tracking.html",
        {"order": order, "steps": workflow.PROGRESS_STEPS},
    )
