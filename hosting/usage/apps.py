from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "hosting.usage"
    label = "usage"
    verbose_name = "Usage"
