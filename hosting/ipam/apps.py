from django.apps import AppConfig


class IpamConfig(AppConfig):
    name = "hosting.ipam"
    label = "ipam"
    verbose_name = "IP addresses"
