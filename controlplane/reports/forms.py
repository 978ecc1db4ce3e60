from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from controlplane.reports.models import ReportSchedule

MAX_RECIPIENTS = 20


class ReportSettingsForm(forms.Form):
    review_rate_per_hour = forms.DecimalField(
        min_value=0,
        max_digits=10,
        decimal_places=2,
        label="Review rate (USD per reviewer hour)",
        help_text="Reviewer minutes are priced at this rate in the client's reports.",
    )


class ReportScheduleForm(forms.Form):
    cadence = forms.ChoiceField(choices=ReportSchedule.Cadence.choices)
    recipients = forms.CharField(
        max_length=2000,
        help_text="Email addresses, comma-separated. Weekly reports go out on Monday for the "
        "week before, monthly ones on the 1st for the month before.",
    )

    def clean_recipients(self) -> str:
        addresses = [a.strip() for a in self.cleaned_data["recipients"].split(",") if a.strip()]
        if not addresses:
            raise ValidationError("Name at least one email address.")
        if len(addresses) > MAX_RECIPIENTS:
            raise ValidationError(f"At most {MAX_RECIPIENTS} addresses.")
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(f"“{address[:80]}” is not an email address.") from None
        return ", ".join(addresses)
