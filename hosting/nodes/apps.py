from django.apps import AppConfig


class NodesConfig(AppConfig):
    name = "hosting.nodes"
    label = "nodes"
