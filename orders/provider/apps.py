from django.apps import AppConfig


class ProviderConfig(AppConfig):
    """An app only so that `manage.py run_sandbox_provider` lives beside the sandbox."""

    name = "orders.provider"
    label = "provider"
