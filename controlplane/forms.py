from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from controlplane.models import Client
from controlplane.roles import Role


class ClientForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=60, help_text="Lowercase letters, digits and hyphens.")
    contact_email = forms.EmailField(required=False)


class ClientLimitsForm(forms.Form):
    monthly_budget = forms.DecimalField(
        required=False,
        min_value=0,
        max_digits=12,
        decimal_places=2,
        help_text="Spend per calendar month (UTC) on all pipelines; empty for no limit. New "
        "work is held at 100%, a warning recorded at 80%.",
    )
    ingest_limit_per_minute = forms.IntegerField(
        min_value=1, max_value=10_000_000, help_text="Items per minute over the API; more get 429."
    )


class PersonForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    password = forms.CharField(widget=forms.PasswordInput, strip=False)
    role = forms.ChoiceField(choices=[(r.value, r.value.title()) for r in Role])
    clients = forms.ModelMultipleChoiceField(
        queryset=Client.objects.filter(is_active=True),
        required=False,
        help_text="A client user belongs to exactly one client; a reviewer to any number.",
    )

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("A user with this username already exists.")
        return username

    def clean(self):
        cleaned = super().clean()
        password = cleaned.get("password")
        if password:
            user = get_user_model()(
                username=cleaned.get("username", ""), email=cleaned.get("email", "")
            )
            try:
                validate_password(password, user)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


def copy_errors(form: forms.BaseForm, exc: ValidationError) -> None:
    """Put a service's ValidationError on a form: by field where the form has that field,
    otherwise as a form-wide error."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)
