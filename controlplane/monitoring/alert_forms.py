from __future__ import annotations

from django import forms

from controlplane.monitoring.models import AlertRule
from pipelines.models import Pipeline

FIELDS = [
    "enabled",
    "threshold",
    "window_minutes",
    "cooldown_minutes",
    "show_in_app",
    "notify_email",
    "recipients",
    "notify_webhook",
    "webhook_url",
]
LABELS = {
    "show_in_app": "Show in the app (banner)",
    "notify_email": "Send an email",
    "notify_webhook": "POST to a webhook",
}


class AlertRuleForm(forms.ModelForm):
    """What an operator may change on a rule; the service validates and audits."""

    class Meta:
        model = AlertRule
        fields = FIELDS
        widgets = {"recipients": forms.TextInput()}
        labels = LABELS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        rule: AlertRule = self.instance
        self.fields["threshold"].help_text = rule.threshold_help
        self.fields["window_minutes"].help_text = rule.window_help
        if rule.threshold_help == "—":
            self.fields["threshold"].disabled = True
        if rule.window_help == "—":
            self.fields["window_minutes"].disabled = True

    def _post_clean(self) -> None:
        # The service assigns and validates the fields; the form only parses them.
        pass


class AlertRuleCreateForm(forms.ModelForm):
    """A new rule: its kind, the pipeline it watches (none for breaker and worker rules) and the
    same fields as an edit; the service checks that kind and pipeline fit together."""

    pipeline = forms.ModelChoiceField(
        queryset=Pipeline.objects.select_related("client").order_by("client__name", "name"),
        required=False,
        empty_label="— whole installation (breaker and worker rules) —",
    )

    class Meta:
        model = AlertRule
        fields = ["kind", "pipeline", *FIELDS]
        widgets = {"recipients": forms.TextInput()}
        labels = LABELS
        help_texts = {
            "threshold": "Its meaning depends on the kind (see the rules list); "
            "empty: the kind's default.",
            "window_minutes": "Minutes the rule looks back over, for kinds with a window.",
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["pipeline"].label_from_instance = lambda p: f"{p.client.name} / {p.name}"
        self.fields["threshold"].required = False

    def _post_clean(self) -> None:
        pass
