from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination


class StrictPageNumberPagination(PageNumberPagination):
    """DRF's page-number pagination, except that an empty `?page=` is an invalid page (404, as
    DRF answers any other invalid page) instead of silently meaning page 1."""

    def paginate_queryset(self, queryset, request, view=None):
        if request.query_params.get(self.page_query_param) == "":
            raise NotFound('Invalid page "": a page number is required.')
        return super().paginate_queryset(queryset, request, view)
