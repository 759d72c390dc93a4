from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "hosting.core"
    label = "core"
    verbose_name = "Core"
