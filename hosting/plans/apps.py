from django.apps import AppConfig


class PlansConfig(AppConfig):
    name = "hosting.plans"
    label = "plans"
