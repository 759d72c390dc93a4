from django.apps import AppConfig


class EnvironmentsConfig(AppConfig):
    name = "hosting.environments"
    label = "environments"
    verbose_name = "VPSes"
