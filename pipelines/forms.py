from __future__ import annotations

import json

from django import forms

from controlplane.models import Client
from pipelines.models import AiModel, Pipeline, PromptLabel, Provider, Step
from pipelines.services.configuration import AIMODEL_FIELDS, PROVIDER_FIELDS

JSON_WIDGET = forms.Textarea(attrs={"rows": 8, "class": "code", "spellcheck": "false"})


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows stored values indented, so operators can read them."""

    widget = JSON_WIDGET

    def prepare_value(self, value):
        if isinstance(value, str):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class PipelineSettingsForm(forms.ModelForm):
    input_schema = PrettyJSONField(
        required=False,
        help_text="JSON Schema of an item's data; items that fail it are quarantined.",
    )

    class Meta:
        model = Pipeline
        fields = [
            "name",
            "description",
            "input_schema",
            "default_priority",
            "latency_target_seconds",
            "daily_budget",
            "concurrency_limit",
            "review_sla_seconds",
            "dedup_window_seconds",
        ]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def clean_input_schema(self):
        return self.cleaned_data["input_schema"] or {}


class PipelineCreateForm(PipelineSettingsForm):
    client = forms.ModelChoiceField(queryset=Client.objects.filter(is_active=True))

    class Meta(PipelineSettingsForm.Meta):
        fields = ["client", "name", "slug", *PipelineSettingsForm.Meta.fields[1:]]


class LabelsField(forms.CharField):
    """Comma-separated labels in the form, a list in the model."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(value)
        return value

    def to_python(self, value):
        value = super().to_python(value)
        return [part.strip() for part in value.split(",") if part.strip()]


class StepForm(forms.ModelForm):
    labels = LabelsField(
        required=False, help_text="Classify steps: the labels, separated by commas."
    )
    output_schema = PrettyJSONField(
        required=False,
        help_text="Generate/extract steps: JSON Schema of the output. Classify steps derive it.",
    )
    rules = PrettyJSONField(
        required=False,
        help_text='Business rules, e.g. [{"kind": "allowed", "field": "currency", '
        '"values": ["EUR", "USD"]}]. Kinds: required, allowed, range, regex.',
    )

    class Meta:
        model = Step
        fields = [
            "name",
            "kind",
            "labels",
            "output_schema",
            "confidence_threshold",
            "rules",
            "on_gate_failure",
            "audit_rate",
            "result_cache_seconds",
        ]
        widgets = {"confidence_threshold": forms.NumberInput(attrs={"step": "0.01"})}

    def clean_output_schema(self):
        return self.cleaned_data["output_schema"] or {}

    def clean_rules(self):
        return self.cleaned_data["rules"] or []


class StepCreateForm(StepForm):
    template = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "class": "code", "spellcheck": "false"}),
        help_text="The prompt, with the item's fields as {{ variables }}.",
    )

    class Meta(StepForm.Meta):
        fields = ["name", "slug", *StepForm.Meta.fields[1:]]


class PromptVersionForm(forms.Form):
    template = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 14, "class": "code", "spellcheck": "false"}),
        strip=False,
    )
    parameters = PrettyJSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "class": "code", "spellcheck": "false"}),
        help_text='Model parameters, e.g. {"temperature": 0, "max_tokens": 300}.',
    )
    change_note = forms.CharField(max_length=300, required=False)

    def clean_parameters(self):
        value = self.cleaned_data["parameters"] or {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Parameters must be a JSON object.")
        return value


class PromptLabelForm(forms.Form):
    label = forms.ChoiceField(choices=PromptLabel.Name.choices)
    action = forms.ChoiceField(choices=[("move", "move"), ("remove", "remove")])


class ProviderForm(forms.ModelForm):
    simulation = PrettyJSONField(
        required=False,
        help_text='Simulated providers only, e.g. {"latency_ms": {"p50": 400, "p95": 1200}, '
        '"failure_rates": {"transient": 0.02}}.',
    )

    class Meta:
        model = Provider
        fields = list(PROVIDER_FIELDS)

    def clean_simulation(self):
        return self.cleaned_data["simulation"] or {}


class AiModelForm(forms.ModelForm):
    class Meta:
        model = AiModel
        fields = list(AIMODEL_FIELDS)


class RouteEntryForm(forms.Form):
    model = forms.ModelChoiceField(queryset=AiModel.objects.none())
    min_input_chars = forms.IntegerField(required=False, min_value=0, label="Input longer than")
    min_priority = forms.IntegerField(
        required=False, min_value=0, max_value=9, label="Priority at least"
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = AiModel.objects.filter(is_active=True).select_related(
            "provider"
        )


RouteFormSet = forms.formset_factory(RouteEntryForm, extra=1, can_delete=True, max_num=10)
