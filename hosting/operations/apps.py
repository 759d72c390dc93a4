from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "hosting.operations"
    label = "operations"
