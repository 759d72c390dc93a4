"""The sign-in page: Django's, plus the lockout's answer (429 with the wait)."""

from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from . import lockout


class SignInForm(AuthenticationForm):
    def clean(self):
        try:
            return super().clean()
        except ValidationError:
            seconds = getattr(self.request, "login_locked_seconds", 0)
            if seconds:
                raise ValidationError(
                    f"Too many failed sign-ins: try again in {lockout.describe(seconds)}.",
                    code="locked") from None
            raise


class SignInView(auth_views.LoginView):
    form_class = SignInForm

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        form = context.get("form")
        if form is not None and form.is_bound and form.has_error("__all__", "locked"):
            context["locked"] = form.non_field_errors()[0]
        return context

    def form_invalid(self, form):
        response = super().form_invalid(form)
        seconds = getattr(self.request, "login_locked_seconds", 0)
        if seconds:
            response.status_code = 429
            response["Retry-After"] = str(seconds)
        return response
