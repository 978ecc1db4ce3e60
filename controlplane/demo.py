"""The demo data: always the same, documented in the README, created only by `seed_demo`."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction

from controlplane.models import Client
from controlplane.roles import Role
from controlplane.services import client_create, user_create
from pipelines.models import AiModel, Example, Pipeline, Provider, Step
from pipelines.services.configuration import (
    aimodel_create,
    pipeline_create,
    prompt_version_create,
    provider_create,
    route_set,
    step_create,
)
from pipelines.services.ingest import item_ingest
from review.services import queue_ensure, queue_member_add

DEMO_PASSWORD = "sluice-demo"  # noqa: S105 -- documented demo login

CLIENTS = (("acme", "Acme Corp"), ("globex", "Globex"))

# username, role, client slugs
USERS = (
    ("operator", Role.OPERATOR, ()),
    ("reviewer", Role.REVIEWER, ("acme", "globex")),
    ("acme", Role.CLIENT, ("acme",)),
    ("globex", Role.CLIENT, ("globex",)),
)

PIPELINES = {
    "acme": (
        (
            "support-triage",
            "Support ticket triage",
            "Classifies incoming support tickets by topic and urgency.",
            (
                "My invoice shows the wrong amount for October.",
                "The app crashes when I upload a photo.",
                "How do I change the email address on my account?",
                "I was charged twice for the same order.",
                "Password reset link never arrives.",
                "Can I get a refund for an unused subscription?",
                "The export button does nothing in Firefox.",
                "Please close my account and delete my data.",
                "Delivery is three days late, where is my parcel?",
                "Two-factor codes are rejected as invalid.",
                "Where can I download last year's receipts?",
                "The dashboard loads very slowly since Monday.",
            ),
        ),
        (
            "invoice-extraction",
            "Invoice extraction",
            "Extracts supplier, date, total and currency from supplier invoices.",
            (
                "INVOICE 2024-117 Northwind Traders, 12 Mar 2024, total EUR 1,240.00",
                "Contoso Ltd invoice #88213 dated 2024-03-15 amount due USD 310.50",
                "Fabrikam GmbH Rechnung 5531, 18.03.2024, Summe 99,90 EUR",
                "Initech invoice INV-0042, March 20 2024, balance $4,800.00",
                "Umbrella Corp, invoice 77-A, 2024-03-22, total GBP 560.00",
                "Wayne Supplies invoice 9917 of 25/03/2024: EUR 12.30",
            ),
        ),
    ),
    "globex": (
        (
            "contract-review",
            "Contract review",
            "Flags risky clauses in incoming vendor contracts.",
            (
                "Either party may terminate this agreement with 7 days notice.",
                "Liability is unlimited for indirect and consequential damages.",
                "Payment terms are net 90 from the date of invoice.",
                "The vendor may assign this contract without consent.",
                "This agreement renews automatically for successive 3-year terms.",
                "Governing law: the courts of the vendor's choosing.",
                "Confidentiality obligations survive for 2 years after termination.",
                "Customer grants vendor a perpetual licence to all submitted data.",
            ),
        ),
        (
            "lead-scoring",
            "Lead scoring",
            "Scores inbound sales leads (draft: not live yet).",
            (
                "CTO at a 500-person logistics firm asking for a demo next week.",
                "Student asking for a free licence for a thesis project.",
                "Procurement manager requesting a quote for 200 seats.",
            ),
        ),
    ),
}


TEXT_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 1}},
    "required": ["text"],
}

# provider name, kind, settings, models (name, input $/Mtok, output $/Mtok, context window)
PROVIDERS = (
    ("Local", "local", {}, (("tfidf-logreg", "0", "0", 100_000),)),
    (
        "Simulated LLM",
        "simulated",
        {
            "simulation": {
                "latency_ms": {"p50": 600, "p95": 2000},
                "failure_rates": {"transient": 0.02},
                # Mostly sure of itself: most items pass the gate, some wait for a person.
                "confidence": {"alpha": 12, "beta": 1.2},
            }
        },
        (("sim-small", "0.15", "0.60", 128_000), ("sim-large", "2.50", "10.00", 128_000)),
    ),
)

# pipeline slug -> steps: (slug, name, fields, template, route as [(provider/model, min chars)])
STEPS = {
    "support-triage": (
        (
            "topic",
            "Topic",
            {
                "kind": "classify",
                # Demo traffic repeats itself: the cache answers repeats at no cost.
                "result_cache_seconds": 3600,
                "labels": ["billing", "bug", "account", "shipping", "other"],
                "confidence_threshold": "0.80",
            },
            "Classify this support ticket by topic.\n\nTicket: {{ text }}",
            [("Local/tfidf-logreg", None)],
        ),
    ),
    "invoice-extraction": (
        (
            "fields",
            "Extract fields",
            {
                "kind": "generate",
                "output_schema": {
                    "type": "object",
                    "properties": {
                        "supplier": {"type": "string"},
                        "date": {"type": "string"},
                        "total": {"type": "number"},
                        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
                    },
                    "required": ["supplier", "total", "currency"],
                },
                "rules": [
                    {"kind": "allowed", "field": "currency", "values": ["EUR", "USD", "GBP"]},
                    {"kind": "range", "field": "total", "min": 0},
                ],
                "confidence_threshold": "0.85",
            },
            "Extract supplier, invoice date, total and currency as JSON from:\n{{ text }}",
            [("Simulated LLM/sim-large", 2000), ("Simulated LLM/sim-small", None)],
        ),
    ),
    "contract-review": (
        (
            "risk",
            "Clause risk",
            {
                "kind": "classify",
                # Demo traffic repeats itself: the cache answers repeats at no cost.
                "result_cache_seconds": 3600,
                "labels": ["low", "medium", "high"],
                "confidence_threshold": "0.90",
            },
            "Rate the legal risk of this contract clause for the customer.\n\n{{ text }}",
            [("Simulated LLM/sim-small", None)],
        ),
    ),
}


# Labeled examples for the local classifier of "Support ticket triage": phrases per topic,
# combined into tickets, always the same.
TOPIC_PHRASES = {
    "billing": [
        "charged twice",
        "refund my payment",
        "invoice amount is wrong",
        "cancel the subscription fee",
        "card was declined",
        "VAT missing on receipt",
    ],
    "bug": [
        "app crashes",
        "button does nothing",
        "error 500 on save",
        "page is blank",
        "export fails",
        "sync stopped working",
    ],
    "account": [
        "reset my password",
        "change my email",
        "two-factor code rejected",
        "delete my account",
        "cannot log in",
        "add a team member",
    ],
    "shipping": [
        "parcel is late",
        "wrong address on the label",
        "package arrived damaged",
        "tracking number not working",
        "delivery never came",
        "change delivery date",
    ],
    "other": [
        "do you have an API",
        "partnership question",
        "feedback on the new design",
        "where is your office",
        "job application",
        "press enquiry",
    ],
}
OPENINGS = ["Hi,", "Hello team,", "Urgent:", "Quick question:", ""]
# The topic of each demo ticket of "Support ticket triage", in the order of PIPELINES.
TRIAGE_LABELS = (
    "billing",
    "bug",
    "account",
    "billing",
    "account",
    "billing",
    "bug",
    "account",
    "shipping",
    "account",
    "billing",
    "bug",
)


def demo_examples() -> list[tuple[str, str]]:
    """(text, label) pairs: every phrase of a topic and every demo ticket, with every opening,
    in a fixed order."""
    tickets = next(spec[3] for spec in PIPELINES["acme"] if spec[0] == "support-triage")
    pairs = [
        (f"{phrase} please", label)
        for label, phrases in TOPIC_PHRASES.items()
        for phrase in phrases
    ]
    pairs += list(zip(tickets, TRIAGE_LABELS, strict=True))
    return [(f"{opening} {text}".strip(), label) for text, label in pairs for opening in OPENINGS]


def _demo_models() -> dict[str, AiModel]:
    models: dict[str, AiModel] = {}
    for name, kind, fields, model_specs in PROVIDERS:
        provider = Provider.objects.filter(name=name).first()
        if provider is None:
            provider = provider_create(
                name=name, kind=kind, actor=None, actor_label="demo", **fields
            )
        for model_name, price_in, price_out, window in model_specs:
            model = provider.models.filter(name=model_name).first()
            if model is None:
                model = aimodel_create(
                    provider=provider,
                    name=model_name,
                    actor=None,
                    actor_label="demo",
                    input_price_per_mtok=price_in,
                    output_price_per_mtok=price_out,
                    context_window=window,
                )
            models[f"{name}/{model_name}"] = model
    return models


@transaction.atomic
def demo_seed() -> dict[str, int]:
    """Create whatever part of the demo data is missing; existing rows are left untouched."""
    created = {"clients": 0, "users": 0, "pipelines": 0, "items": 0}
    clients: dict[str, Client] = {}
    for slug, name in CLIENTS:
        client = Client.objects.filter(slug=slug).first()
        if client is None:
            client = client_create(name=name, slug=slug, actor_label="demo")
            created["clients"] += 1
        clients[slug] = client

    User = get_user_model()
    for username, role, client_slugs in USERS:
        if not User.objects.filter(username=username).exists():
            user_create(
                username=username,
                password=DEMO_PASSWORD,
                role=role,
                clients=[clients[s] for s in client_slugs],
                email=f"{username}@example.com",
                actor_label="demo",
            )
            created["users"] += 1

    models = _demo_models()
    for client_slug, specs in PIPELINES.items():
        client = clients[client_slug]
        for slug, name, description, texts in specs:
            if Pipeline.objects.filter(client=client, slug=slug).exists():
                continue
            status = Pipeline.Status.DRAFT if slug == "lead-scoring" else Pipeline.Status.ACTIVE
            pipeline = pipeline_create(
                client=client,
                name=name,
                slug=slug,
                description=description,
                status=status,
                input_schema=TEXT_SCHEMA,
                actor_label="demo",
            )
            created["pipelines"] += 1
            for step_slug, step_name, fields, template, route in STEPS.get(slug, ()):
                step = step_create(
                    pipeline=pipeline,
                    name=step_name,
                    slug=step_slug,
                    template=template,
                    actor=None,
                    actor_label="demo",
                    **fields,
                )
                route_set(
                    step=step,
                    entries=[
                        {"model": models[key], "min_input_chars": chars} for key, chars in route
                    ],
                    actor=None,
                    actor_label="demo",
                )
                if step.slug == "fields":
                    # A version to try a gradual rollout with: its simulated calls fail far
                    # more often, so the error-rate guard rolls it back.
                    prompt_version_create(
                        step=step,
                        template="Extract supplier, date, total and currency as JSON:\n{{ text }}",
                        parameters={"simulation": {"failure_rates": {"transient": 0.4}}},
                        change_note="Shorter instructions (simulated: 40% of calls fail)",
                        actor=None,
                        actor_label="demo",
                    )
                if step.slug == "topic":
                    Example.objects.bulk_create(
                        [
                            Example(step=step, data={"text": text}, expected={"label": label})
                            for text, label in demo_examples()
                        ]
                    )
            if status == Pipeline.Status.DRAFT:
                continue  # a draft takes no items until it is activated
            items = item_ingest(
                pipeline=pipeline,
                items=[
                    {"data": {"text": text}, "external_id": f"{slug}-{n:03d}"}
                    for n, text in enumerate(texts, start=1)
                ],
                actor="demo",
            )
            created["items"] += len(items)
    _demo_review_queues(clients=list(clients.values()))
    _demo_reports(acme=clients["acme"])
    return created


def _demo_review_queues(*, clients: list[Client]) -> None:
    """The demo reviewer works the review queue of every step of the demo pipelines."""
    reviewer = get_user_model().objects.filter(username="reviewer").first()
    if reviewer is None:
        return
    for step in Step.objects.filter(pipeline__client__in=clients).select_related("pipeline"):
        queue_member_add(
            queue=queue_ensure(step=step), user=reviewer, actor=None, actor_label="demo"
        )


def _demo_reports(*, acme: Client) -> None:
    """Acme's reports price review at $45 an hour and go to its contact every Monday."""
    from controlplane.reports.models import ReportSchedule, ReportSettings

    ReportSettings.objects.get_or_create(
        client=acme, defaults={"review_rate_per_hour": Decimal("45.00")}
    )
    if not ReportSchedule.objects.filter(client=acme).exists():
        ReportSchedule.objects.create(
            client=acme, cadence=ReportSchedule.Cadence.WEEKLY, recipients="acme@example.com"
        )


def demo_traffic_tick(*, rng) -> int:
    """Submit a few demo items to the active demo pipelines, as an integrator would."""
    from pipelines.services.ingest import items_submit

    submitted = 0
    for pipeline in Pipeline.objects.filter(
        client__slug__in=[slug for slug, _ in CLIENTS], status=Pipeline.Status.ACTIVE
    ):
        texts = next(
            (spec[3] for specs in PIPELINES.values() for spec in specs if spec[0] == pipeline.slug),
            (),
        )
        if not texts:
            continue
        entries = [
            {
                "data": {"text": f"{rng.choice(texts)} (#{rng.randrange(10**6)})"},
                "priority": rng.randrange(10),
            }
            for _ in range(rng.randint(1, 2))
        ]
        submitted += len(items_submit(pipeline=pipeline, entries=entries, actor="demo-traffic"))
    return submitted
