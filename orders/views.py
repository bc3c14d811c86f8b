"""The customer's pages: their orders, and one order's live tracking page (server-rendered; a
little JavaScript keeps it current from the JSON API)."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render

from . import presentation, selectors
from .models import TERMINAL_STATUSES

ORDERS_PER_PAGE = 20


@login_required
def order_tracking(request, order_id):
    order = selectors.order_get_for_user(user=request.user, order_id=order_id)
    progress = presentation.order_progress_data(order)
    return render(
        request,
        "orders/tracking.html",
        {
            "order": order,
            "progress": progress,
            "lines": order.lines.select_related("product"),
            "terminal_statuses": sorted(TERMINAL_STATUSES),
        },
    )


@login_required
def order_list_page(request):
    """The signed-in user's own orders, newest first (staff too: the admin lists everyone's)."""
    orders = selectors.order_list_for_user(user=request.user).filter(user=request.user)
    page = Paginator(orders.order_by("-created_at"), ORDERS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "orders/order_list.html",
        {
            "page": page,
            "rows": [
                {"order": order, "status_label": presentation.status_label(order.status)}
                for order in page
            ],
        },
    )
