"""Portal forms. Field checks reuse the engine's validators; the services decide the rest."""

from django import forms

from hosting.plans.models import Plan

from .models import OSTemplate
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
                               help_text="e.g. web1.example.com")
    root_password = forms.CharField(required=False, widget=forms.PasswordInput,
                                    help_text="at least 8 characters; never stored")
    ssh_key = forms.CharField(required=False, label="SSH public key",
                              widget=forms.Textarea(attrs={"rows": 3}))


class ReauthForm(forms.Form):
    current_password = forms.CharField(widget=forms.PasswordInput,
                                       label="Your account password",
                                       help_text="needed to confirm it is you")


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
