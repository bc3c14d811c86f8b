"""A measured speed trick, kept in one place (bench/README.md, API figures).

`POST /api/orders/` answers with the order it just wrote. Serialising it through its related
managers would read the lines and the first event back from the database; filling Django's
prefetch cache with the objects just written saves those queries. The cache is private API
(`_result_cache`, `_prefetch_done`, `_prefetched_objects_cache`), so nothing else touches it.
"""

from django.db.models import Model


def prefetched(instance: Model, **related: list) -> Model:
    """Fill `instance`'s related managers with `related` objects, as prefetch_related would."""
    cache = {}
    for name, objects in related.items():
        queryset = getattr(instance, name).all()
        queryset._result_cache = list(objects)
        queryset._prefetch_done = True
        cache[name] = queryset
    instance._prefetched_objects_cache = cache
    return instance
