from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "hosting.core"
    label = "core"
    verbose_name = "Core"

    def ready(self):
        from django.contrib.auth import signals

        from . import audit
        # Sign-ins belong in the audit log too: who was on the account when.
        signals.user_logged_in.connect(audit.on_login, dispatch_uid="audit-login")
        signals.user_login_failed.connect(audit.on_login_failed, dispatch_uid="audit-login-failed")
        from . import lockout
        signals.user_login_failed.connect(lockout.on_login_failed, dispatch_uid="lockout-count")
