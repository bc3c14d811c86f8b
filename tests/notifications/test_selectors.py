"""Reads other apps make of notifications, through selectors rather than the tables."""

from notifications.models import Notification
from notifications.selectors import DEDUPE_KEYS_PER_QUERY, notification_dedupe_keys_existing


def test_dedupe_keys_existing_are_those_with_a_notification(customer, other_customer):
    Notification.objects.create(user=customer, kind="order.confirmed", title="t", dedupe_key="a")
    Notification.objects.create(user=other_customer, kind="order.failed", title="t", dedupe_key="b")

    found = notification_dedupe_keys_existing(keys=["a", "b", "c", "a"])

    assert found == {"a", "b"}
    assert notification_dedupe_keys_existing(keys=[]) == set()
    assert notification_dedupe_keys_existing(keys=iter(["c", "b"])) == {"b"}


def test_dedupe_keys_existing_takes_more_keys_than_one_query_binds(
    customer, django_assert_num_queries
):
    count = 2 * DEDUPE_KEYS_PER_QUERY + 10
    keys = [f"order:{index}:confirmed:0" for index in range(count)]
    Notification.objects.bulk_create(
        Notification(user=customer, kind="order.confirmed", title="t", dedupe_key=key)
        for key in keys[::3]
    )

    with django_assert_num_queries(3):
        found = notification_dedupe_keys_existing(keys=[*keys, "unknown"])

    assert found == set(keys[::3])
