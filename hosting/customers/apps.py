from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "hosting.customers"
    label = "customers"
