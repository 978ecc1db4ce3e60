from __future__ import annotations

import json
from decimal import Decimal

from django import forms

from controlplane.models import Client
from pipelines.models import (
    AiModel,
    Evaluation,
    Pipeline,
    PromptLabel,
    PromptVersion,
    Provider,
    Step,
)
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
            "cascade",
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


class RolloutStartForm(forms.Form):
    """Start a gradual rollout of a version of one step against its production version."""

    candidate = forms.ModelChoiceField(queryset=PromptVersion.objects.none(), empty_label=None)
    stages = forms.CharField(
        max_length=60,
        initial="5, 25, 50, 100",
        help_text="Percent of new items the candidate takes at each stage, ending at 100.",
    )
    min_items = forms.IntegerField(
        initial=50,
        min_value=1,
        max_value=1_000_000,
        help_text="Items each side must finish at a stage before the guards judge it.",
    )
    rate_margin = forms.DecimalField(
        initial=Decimal("0.05"),
        min_value=0,
        max_value=1,
        decimal_places=3,
        help_text="How much higher a review, edit, reject or error rate may be (0.05: 5 points).",
    )
    relative_margin = forms.DecimalField(
        initial=Decimal("0.2"),
        min_value=0,
        max_value=10,
        decimal_places=3,
        help_text="How much slower (p95) or dearer per item it may be (0.2: 20%).",
    )

    def __init__(self, *args, step: Step, **kwargs):
        super().__init__(*args, **kwargs)
        production = step.prompt_labels.filter(name=PromptLabel.Name.PRODUCTION).first()
        versions = step.prompt_versions.order_by("-number")
        if production is not None:
            versions = versions.exclude(pk=production.version_id)
        self.fields["candidate"].queryset = versions
        self.fields["candidate"].label_from_instance = lambda v: (
            f"v{v.number}{' — ' + v.change_note if v.change_note else ''}"
        )


class EvaluationForm(forms.Form):
    """Run a version of a step over examples or reviewed items in the background."""

    version = forms.ModelChoiceField(queryset=PromptVersion.objects.none(), empty_label=None)
    source = forms.ChoiceField(choices=Evaluation.Source.choices)
    sample_size = forms.IntegerField(initial=100, min_value=1, max_value=2000)
    model = forms.ModelChoiceField(
        queryset=AiModel.objects.none(),
        required=False,
        empty_label="the step's route",
        help_text="Run another model instead of the step's route, to compare models.",
    )

    def __init__(self, *args, step: Step, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["version"].queryset = step.prompt_versions.order_by("-number")
        self.fields["version"].label_from_instance = lambda v: f"v{v.number}"
        self.fields["model"].queryset = AiModel.objects.filter(is_active=True).select_related(
            "provider"
        )
