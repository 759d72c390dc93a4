from django.apps import AppConfig


class NodesConfig(AppConfig):
    name = "hosting.nodes"
    label = "nodes"

    def ready(self):
        from . import worker  # noqa: F401  connects the root worker's signals
