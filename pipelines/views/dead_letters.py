"""The dead-letter page: what failed for good and why, each item's ledger on demand, a dry run on
a sample, and a re-drive of the selected items or of everything the filter matches."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from controlplane.access import role_required
from controlplane.htmx import redirect_after_post
from controlplane.params import parse_id
from controlplane.roles import Role
from controlplane.selectors import client_list_for_user
from pipelines.models import Item, Step
from pipelines.selectors import (
    item_get_for_user,
    item_list_for_user,
    pipeline_list_for_user,
    prompt_version_list,
)
from pipelines.services.redrive import (
    DRY_RUN_SAMPLE,
    REDRIVE_LIMIT,
    dead_letter_filter,
    items_redrive,
    items_redrive_dry_run,
    redrive_step,
)

PAGE = 100
MAX_POSITION = 32767
ERROR_CLASSES = ("transient", "system", "processing", "input", "provider_limit")
FILTERS = ("status", "error_class", "client", "pipeline", "step", "since", "until")


class DeadLetterFilterForm(forms.Form):
    """Which dead letters (or rejected items) to list and act on; every choice is scoped to the
    clients the user may see."""

    status = forms.ChoiceField(
        choices=[(Item.Status.DEAD_LETTERED, "dead letters"), (Item.Status.REJECTED, "rejected")],
        required=False,
    )
    error_class = forms.ChoiceField(
        choices=[("", "every error class"), *((c, c.replace("_", " ")) for c in ERROR_CLASSES)],
        required=False,
    )
    client = forms.ChoiceField(required=False)
    pipeline = forms.ModelChoiceField(queryset=None, required=False, empty_label="every pipeline")
    step = forms.CharField(
        required=False,
        max_length=60,
        help_text="A position (1, 2, …) or a step slug.",
    )
    since = forms.DateTimeField(required=False, help_text="Ended at or after.")
    until = forms.DateTimeField(required=False, help_text="Ended before.")

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        clients = client_list_for_user(user=user).order_by("name")
        self.fields["client"].choices = [("", "every client")] + [(c.slug, c.name) for c in clients]
        self.fields["pipeline"].queryset = pipeline_list_for_user(user=user).order_by(
            "client__name", "name"
        )
        self.fields["pipeline"].label_from_instance = lambda p: f"{p.client.name} · {p.name}"

    def clean_step(self) -> str:
        step = self.cleaned_data["step"].strip()
        if step.isdigit():
            if not 1 <= int(step) <= MAX_POSITION:
                raise ValidationError("A step position is a number from 1.")
        elif step:
            validate_slug(step)
        return step

    def clean(self) -> dict:
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until <= since:
            self.add_error("until", "The end of the range must be after its start.")
        step = cleaned.get("step")
        if step and not step.isdigit():
            steps = Step.objects.filter(
                slug=step, pipeline__in=pipeline_list_for_user(user=self.user)
            )
            if cleaned.get("pipeline"):
                steps = steps.filter(pipeline=cleaned["pipeline"])
            if cleaned.get("client"):
                steps = steps.filter(pipeline__client__slug=cleaned["client"])
            if not steps.exists():
                self.add_error("step", f'No step "{step}" in the chosen pipelines.')
        return cleaned

    def filter(self, items: QuerySet[Item]) -> QuerySet[Item]:
        """`items` narrowed by the valid filter (call after is_valid())."""
        data = self.cleaned_data
        if data.get("client"):
            items = items.filter(pipeline__client__slug=data["client"])
        if data.get("pipeline"):
            items = items.filter(pipeline=data["pipeline"])
        return dead_letter_filter(
            items,
            status=data.get("status") or Item.Status.DEAD_LETTERED,
            error_class=data.get("error_class", ""),
            step=data.get("step", ""),
            since=data.get("since"),
            until=data.get("until"),
        )

    def query(self, **extra) -> str:
        """The filter as a query string, as the user typed it, for links and redirects."""
        pairs = {name: self.data.get(name, "") for name in FILTERS}
        pairs.update(extra)
        return urlencode({k: v for k, v in pairs.items() if v not in ("", None)})


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def dead_letter_list(request: HttpRequest) -> HttpResponse:
    ledger_of = parse_id(request.GET.get("ledger"))
    if request.method == "GET" and ledger_of is not None:
        item = item_get_for_user(user=request.user, pk=ledger_of)
        context = {"item": item, "ledger": item.ledger.all()}
        return render(request, "pipelines/dead_letters.html#ledger-row", context)
    params = request.POST if request.method == "POST" else request.GET
    form = DeadLetterFilterForm({name: params.get(name, "") for name in FILTERS}, user=request.user)
    scope = item_list_for_user(user=request.user)
    items = form.filter(scope) if form.is_valid() else scope.none()
    errors: dict[str, str] = {}
    dry_run = None
    selected = [i for i in map(parse_id, request.POST.getlist("ids")) if i is not None]
    every = request.POST.get("all") == "1"
    version_raw = request.POST.get("prompt_version", "").strip()
    prompt_version = parse_id(version_raw)
    if request.method == "POST":
        action = request.POST.get("action")
        if version_raw and prompt_version is None:
            errors["prompt_version"] = "Choose a prompt version from the list."
        if form.errors:
            errors["filter"] = "Fix the filter before acting on what it matches."
        if every:
            chosen = list(items.select_related("pipeline").order_by("id")[:REDRIVE_LIMIT])
        else:
            chosen = list(items.filter(pk__in=selected).select_related("pipeline").order_by("id"))
        if not chosen and not errors:
            errors["ids"] = (
                "Select at least one item, or tick “all matching the filter”."
                if not every
                else "Nothing matches the filter."
            )
        if not errors:
            try:
                if action == "redrive":
                    done = items_redrive(
                        items=chosen, actor=request.user, prompt_version=prompt_version
                    )
                    _report(request, done, more=every and items.exists())
                    url = reverse("dead-letter-list")
                    return redirect_after_post(request, f"{url}?{form.query()}".rstrip("?"))
                dry_run = items_redrive_dry_run(items=chosen, prompt_version=prompt_version)
            except ValidationError as exc:
                errors.update(_messages_by_field(exc))
    before = parse_id(params.get("before"))
    page_items = items if before is None else items.filter(pk__lt=before)
    page = list(page_items.select_related("pipeline__client").order_by("-id")[: PAGE + 1])
    _name_steps(page[:PAGE])
    step = redrive_step(items=page[:PAGE]) if page else None
    matching = items.order_by()[: REDRIVE_LIMIT + 1].count()
    context = {
        "form": form,
        "items": page[:PAGE],
        "next_query": form.query(before=page[PAGE - 1].pk) if len(page) > PAGE else None,
        "status": form.cleaned_data.get("status") if form.is_valid() else "",
        "selected": set(selected),
        "every": every,
        "dry_run": dry_run,
        "dry_run_version": prompt_version,
        "sample_size": DRY_RUN_SAMPLE,
        "limit": REDRIVE_LIMIT,
        "limit_text": f"{REDRIVE_LIMIT:,}",
        "matching": matching,
        "step": step,
        "versions": prompt_version_list(step=step) if step else [],
        "prompt_version": prompt_version,
        "errors": errors,
        "step_slugs": Step.objects.filter(pipeline__in=pipeline_list_for_user(user=request.user))
        .order_by("slug")
        .values_list("slug", flat=True)
        .distinct(),
    }
    failed = bool(errors) or bool(form.errors)
    return render(request, "pipelines/dead_letters.html", context, status=422 if failed else 200)


def _name_steps(items: list[Item]) -> None:
    """Give each listed item `step_slug`: the slug of the step it stopped at, if it still exists."""
    slugs = {
        (s.pipeline_id, s.position): s.slug
        for s in Step.objects.filter(pipeline_id__in={i.pipeline_id for i in items})
    }
    for item in items:
        item.step_slug = slugs.get((item.pipeline_id, item.step_position), "")


def _report(request: HttpRequest, done, *, more: bool) -> None:
    count = len(done.queued)
    text = f"{count} item{'s' if count != 1 else ''} queued again"
    if done.prompt_version is not None:
        text += f" against prompt version {done.prompt_version}"
    text += "."
    if done.skipped:
        text += f" {len(done.skipped)} skipped: no longer dead-lettered or rejected."
    if more:
        text += f" More items match the filter: re-drive again for the next {REDRIVE_LIMIT:,}."
    messages.success(request, text)


def _messages_by_field(exc: ValidationError) -> dict[str, str]:
    if hasattr(exc, "error_dict"):
        return {name: " ".join(exc.message_dict[name]) for name in exc.error_dict}
    return {"ids": " ".join(exc.messages)}
