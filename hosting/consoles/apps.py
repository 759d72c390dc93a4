from django.apps import AppConfig


class ConsolesConfig(AppConfig):
    name = "hosting.consoles"
    label = "consoles"
    verbose_name = "Web consoles"

    def ready(self):
        from django.contrib.auth.signals import user_logged_out

        from . import ending
        # Signing out ends that login's consoles (the socket's session is gone).
        user_logged_out.connect(ending.on_logout, dispatch_uid="consoles-logout")
