"""Portal forms. Field checks reuse the engine's validators; the services decide the rest."""

from django import forms

from hosting.core.errors import Invalid
from hosting.plans.models import Plan

from . import services
from .models import OSTemplate, VirtualEnvironment as VE
from .validators import validate_hostname


class PlanChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, plan):
        return (f"{plan.name}: {plan.ram_mb} MiB RAM, {plan.cpus or 'all'} CPU, "
                f"{plan.disk_gib} GiB disk, {plan.monthly_price}/month")


class OrderForm(forms.Form):
    plan = PlanChoiceField(queryset=Plan.objects.filter(active=True), empty_label=None)
    template = forms.ModelChoiceField(queryset=OSTemplate.objects.filter(active=True),
                                      empty_label=None, label="OS template")
    hostname = forms.CharField(max_length=253, validators=[validate_hostname],
                               label="Host name", help_text="e.g. web1.example.com")
    root_password = forms.CharField(required=False, widget=forms.PasswordInput,
                                    help_text="at least 8 characters; never stored")
    ssh_key = forms.CharField(required=False, label="SSH public key",
                              widget=forms.Textarea(attrs={"rows": 3}))

    # Every check the order service makes on its input is made here first, field by
    # field, so one submit shows every mistake at once (the service still checks all
    # of them again; what only it can know, such as capacity, comes from it).
    def clean_hostname(self):
        hostname = self.cleaned_data["hostname"].lower()  # as the service stores it
        if VE.objects.named(hostname).live().exists():
            raise forms.ValidationError(f"host name {hostname} is taken")
        return hostname

    def clean_root_password(self):
        password = self.cleaned_data["root_password"]
        if password and len(password) < services.MIN_PASSWORD:
            raise forms.ValidationError(
                f"the root password needs at least {services.MIN_PASSWORD} characters")
        if len(password.encode()) > services.MAX_PASSWORD or "\0" in password:
            raise forms.ValidationError(
                f"the root password may have at most {services.MAX_PASSWORD} bytes")
        return password

    def clean_ssh_key(self):
        try:
            return services.check_ssh_key(self.cleaned_data["ssh_key"])
        except Invalid as exc:
            raise forms.ValidationError(exc.message) from None

    def clean(self):
        data = super().clean()
        plan, template = data.get("plan"), data.get("template")
        if plan and template and not plan.offered_templates().filter(pk=template.pk).exists():
            self.add_error("template", f"plan {plan.name} does not offer template "
                                       f"{template.name}")
        if not data.get("root_password") and not data.get("ssh_key") and \
                "root_password" not in self.errors and "ssh_key" not in self.errors:
            self.add_error("root_password", "give a root password or an SSH key to log in with")
        return data


class ReauthForm(forms.Form):
    current_password = forms.CharField(widget=forms.PasswordInput,
                                       label="Your account password",
                                       help_text="needed to confirm it is you")
    otp_code = forms.CharField(required=False, max_length=20, label="Two-factor code",
                               help_text="if you sign in with two-factor: a current code",
                               widget=forms.TextInput(attrs={"autocomplete": "one-time-code",
                                                             "inputmode": "numeric"}))


class TerminateForm(ReauthForm):
    """Terminate asks for the account password (and code) again, like reinstall."""


class PasswordForm(ReauthForm):
    root_password = forms.CharField(widget=forms.PasswordInput, label="New root password",
                                    min_length=8)


class ReinstallForm(ReauthForm):
    template = forms.ModelChoiceField(queryset=OSTemplate.objects.filter(active=True),
                                      empty_label=None, label="OS template")
    root_password = forms.CharField(required=False, widget=forms.PasswordInput,
                                    label="New root password")
    ssh_key = forms.CharField(required=False, label="SSH public key",
                              widget=forms.Textarea(attrs={"rows": 2}))
    keep_old = forms.BooleanField(required=False, label="Keep my old files in /old-root")


class SnapshotForm(forms.Form):
    name = forms.CharField(required=False, max_length=40, label="Name",
                           help_text="optional: letters, digits, '.', '_', '-' (default: the "
                                     "time)")


class RollbackForm(ReauthForm):
    """A rollback erases what changed since the snapshot: the password (and code) again."""

    name = forms.CharField(max_length=40, widget=forms.HiddenInput)


class RestoreBackupForm(ReauthForm):
    """A whole restore erases what changed since the backup: the password (and code)."""

    backup = forms.RegexField(r"^[0-9a-f]{8,64}$", widget=forms.HiddenInput)


class RestoreFilesForm(forms.Form):
    path = forms.CharField(max_length=4096, widget=forms.HiddenInput)
    into = forms.CharField(required=False, max_length=4096, label="Restore into folder",
                           help_text="blank: back at its own place, replacing what is there")


class RestoreNewForm(forms.Form):
    plan = PlanChoiceField(queryset=Plan.objects.filter(active=True), empty_label=None)
    hostname = forms.CharField(max_length=253, validators=[validate_hostname],
                               label="Host name of the new VPS")
    root_password = forms.CharField(required=False, widget=forms.PasswordInput,
                                    label="New root password",
                                    help_text="optional: blank keeps the logins of the backup")
