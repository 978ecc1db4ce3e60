from __future__ import annotations

from django import forms

from controlplane.monitoring.models import AlertRule


class AlertRuleForm(forms.ModelForm):
    """What an operator may change on a rule; the service validates and audits."""

    class Meta:
        model = AlertRule
        fields = [
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
        widgets = {"recipients": forms.TextInput()}
        labels = {
            "show_in_app": "Show in the app (banner)",
            "notify_email": "Send an email",
            "notify_webhook": "POST to a webhook",
        }

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
