from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from controlplane.models import Client

env_var_name = RegexValidator(
    r"^[A-Z_][A-Z0-9_]*$", "An environment variable name: capitals, digits and underscores."
)


def api_key_variable(name: str) -> None:
    """Only variables meant for provider keys: a provider sends the value to its base URL, so a
    name like SECRET_KEY or DATABASE_URL would hand this installation's secrets to any host."""
    if not name.endswith(("_API_KEY", "_TOKEN")):
        raise ValidationError(
            "Name a variable ending in _API_KEY or _TOKEN (e.g. OPENAI_API_KEY): other "
            "variables of this server are never sent to a provider."
        )


class Pipeline(models.Model):
    """A client's automation: items go in, run through its steps, and come out."""

    class Status(models.TextChoices):
        DRAFT = "draft"
        ACTIVE = "active"
        PAUSED = "paused"

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="pipelines")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    # Items that fail it are quarantined with the reason; {} accepts any JSON object.
    input_schema = models.JSONField(default=dict, blank=True)
    default_priority = models.PositiveSmallIntegerField(
        default=5, validators=[MaxValueValidator(9)]
    )
    latency_target_seconds = models.PositiveIntegerField(
        default=300, help_text="SLA: seconds from ingest to delivery."
    )
    daily_budget = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Spend per day (UTC) before new work is held; empty for no limit. "
        "A warning is recorded at 80%.",
    )
    concurrency_limit = models.PositiveIntegerField(
        default=32,
        validators=[MinValueValidator(1)],
        help_text="Items of this pipeline running at once, across all workers.",
    )
    review_sla_seconds = models.PositiveIntegerField(
        default=3600,
        validators=[MinValueValidator(60)],
        help_text="Seconds a held item may wait for a person before its review is overdue.",
    )
    dedup_window_seconds = models.PositiveIntegerField(
        default=86400,
        help_text="An item with the same data as one received this recently is a duplicate; "
        "0 turns content deduplication off.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["client__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["client", "slug"], name="pipeline_slug_unique"),
            models.CheckConstraint(
                condition=models.Q(default_priority__lte=9), name="pipeline_priority_0_9"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Item(models.Model):
    """One unit of work (a ticket, a document, a record). Its row is the truth of its state."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING_RETRY = "waiting_retry"
        IN_REVIEW = "in_review"
        ACCEPTED = "accepted"
        DELIVERING = "delivering"
        DELIVERED = "delivered"
        REJECTED = "rejected"
        QUARANTINED = "quarantined"
        DEDUPLICATED = "deduplicated"
        DEAD_LETTERED = "dead_lettered"

    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="items")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    data = models.JSONField()
    external_id = models.CharField(max_length=200, blank=True)
    priority = models.PositiveSmallIntegerField(default=0)
    # SHA-256 of the data as canonical JSON: finds the same content sent twice.
    content_hash = models.CharField(max_length=64, blank=True)
    error_class = models.CharField(max_length=16, blank=True)
    error_message = models.TextField(blank=True)
    # Where the item is: the position of the step it is at, and attempts made at that step.
    step_position = models.PositiveSmallIntegerField(default=1)
    attempts = models.PositiveSmallIntegerField(default=0)
    # A worker's claim: another worker may take the item once the lease has expired.
    lease_owner = models.CharField(max_length=120, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Per step slug: output, confidence, model, prompt version, verdict.
    outputs = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    hold_reason = models.TextField(blank=True)
    # Step slug -> prompt version number this item runs instead of the production label
    # (a re-drive against another version). Steps not named here follow their label.
    prompt_pins = models.JSONField(default=dict, blank=True)
    # Step slug -> {"rollout": id, "version": number}: the arm of a gradual rollout the item
    # was given at that step, so a re-run while the rollout lasts uses the same version.
    rollout_arms = models.JSONField(default=dict, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["pipeline", "-created_at"], name="item_pipeline_recent"),
            models.Index(fields=["pipeline", "content_hash"], name="item_pipeline_content"),
            # Claiming reads each pipeline's queue in priority order and its due retries.
            models.Index(fields=["pipeline", "status", "-priority", "id"], name="item_claim_order"),
            models.Index(fields=["pipeline", "status", "next_attempt_at"], name="item_retry_due"),
            models.Index(fields=["status", "lease_expires_at"], name="item_lease"),
            # Item pages and the API list by id, newest or oldest first, with or without status.
            models.Index(fields=["pipeline", "-id"], name="item_pipeline_id"),
            models.Index(fields=["pipeline", "status", "-id"], name="item_pipeline_status_id"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(priority__lte=9), name="item_priority_0_9"),
            # The database, not a check in Python, makes an external id count once per
            # pipeline, even when two requests race.
            models.UniqueConstraint(
                fields=["pipeline", "external_id"],
                condition=~models.Q(external_id=""),
                name="item_external_id_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.pk}"


class LedgerEvent(models.Model):
    """One state change of an item, written in the same transaction as the change."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="ledger")
    at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=150)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.item_id}: {self.from_status or '∅'} → {self.to_status}"


class Provider(models.Model):
    """Where model calls go: the in-process local model, an OpenAI-compatible server, or a
    simulation. API keys are never stored: only the name of the variable that holds one."""

    class Kind(models.TextChoices):
        LOCAL = "local", "Local (scikit-learn, offline)"
        OPENAI = "openai", "OpenAI-compatible"
        SIMULATED = "simulated", "Simulated"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    base_url = models.URLField(blank=True, help_text="OpenAI-compatible servers only.")
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        validators=[env_var_name, api_key_variable],
        help_text="Name of the environment variable holding the API key (never the key).",
    )
    timeout_seconds = models.DecimalField(
        max_digits=6,
        decimal_places=1,
        default=Decimal("30"),
        validators=[MinValueValidator(Decimal("0.1")), MaxValueValidator(Decimal("600"))],
    )
    max_concurrency = models.PositiveIntegerField(default=16, validators=[MinValueValidator(1)])
    rate_limit_per_minute = models.PositiveIntegerField(
        default=0,
        help_text="Requests per minute across all workers; 0 for no limit.",
    )
    breaker_failure_threshold = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1)],
        help_text="Consecutive failures that open the circuit breaker.",
    )
    breaker_reset_seconds = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1)],
        help_text="Seconds the breaker stays open before a probe call.",
    )
    # Simulated providers: latency distribution, failure rate per error class, token counts.
    simulation = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.kind == self.Kind.OPENAI and not self.base_url:
            errors["base_url"] = "An OpenAI-compatible provider needs a base URL."
        if not isinstance(self.simulation, dict):
            errors["simulation"] = "Simulation settings must be a JSON object."
        elif self.kind != self.Kind.SIMULATED and self.simulation:
            errors["simulation"] = "Only simulated providers have simulation settings."
        elif self.kind == self.Kind.SIMULATED:
            from pipelines.providers.simulated import simulation_problems

            problems = simulation_problems(self.simulation)
            if problems:
                errors["simulation"] = problems
        if errors:
            raise ValidationError(errors)


class AiModel(models.Model):
    """A model a provider serves, with its prices, so every call has a cost."""

    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="models")
    name = models.CharField(max_length=200, help_text="The provider's model name.")
    input_price_per_mtok = models.DecimalField(
        "input price per million tokens", max_digits=10, decimal_places=4, default=Decimal("0")
    )
    output_price_per_mtok = models.DecimalField(
        "output price per million tokens", max_digits=10, decimal_places=4, default=Decimal("0")
    )
    context_window = models.PositiveIntegerField(default=8192)
    is_active = models.BooleanField(default=True)

    class Meta:
        verbose_name = "model"
        ordering = ["provider__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "name"], name="aimodel_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.provider.name}/{self.name}"


class Step(models.Model):
    """One model call in a pipeline, with the gate its output must pass."""

    class Kind(models.TextChoices):
        CLASSIFY = "classify", "Classify"
        GENERATE = "generate", "Generate / extract"

    class OnGateFailure(models.TextChoices):
        REVIEW = "review", "Send to review"
        REJECT = "reject", "Reject"

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CLASSIFY)
    labels = models.JSONField(default=list, blank=True)
    output_schema = models.JSONField(default=dict, blank=True)
    confidence_threshold = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.800"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
    )
    rules = models.JSONField(default=list, blank=True)
    on_gate_failure = models.CharField(
        max_length=10, choices=OnGateFailure.choices, default=OnGateFailure.REVIEW
    )
    audit_rate = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="Share of the outputs the gate accepts that a person also labels blind "
        "(without seeing the model's answer), to measure the true error rate; 0 to 1.",
    )
    cascade = models.BooleanField(
        default=False,
        help_text="Try the route's models in order, cheapest first: an answer under the "
        "confidence threshold escalates to the next model before the item goes to review.",
    )
    result_cache_seconds = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(30 * 86400)],
        help_text="Reuse a model's answer to the same prompt version, model, parameters and "
        "input for this many seconds, at no cost; 0 turns the cache off. Leave it off for "
        "prompts that should answer differently each time.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pipeline", "position"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "slug"], name="step_slug_unique"),
            models.UniqueConstraint(
                fields=["pipeline", "position"],
                name="step_position_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(confidence_threshold__gte=0, confidence_threshold__lte=1),
                name="step_threshold_0_1",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class RouteEntry(models.Model):
    """One model in a step's route. Entries whose conditions match an item, in order, are the
    model to call and then its fallback chain."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="route")
    position = models.PositiveSmallIntegerField()
    model = models.ForeignKey(AiModel, on_delete=models.PROTECT, related_name="+")
    min_input_chars = models.PositiveIntegerField(
        null=True, blank=True, help_text="Only for inputs longer than this many characters."
    )
    min_priority = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(9)],
        help_text="Only for items of at least this priority.",
    )

    class Meta:
        ordering = ["step", "position"]
        verbose_name_plural = "route entries"
        constraints = [
            models.UniqueConstraint(
                fields=["step", "position"],
                name="route_position_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step} #{self.position}: {self.model}"


class PromptVersion(models.Model):
    """An immutable prompt: once written it never changes; labels point at versions."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="prompt_versions")
    number = models.PositiveIntegerField()
    template = models.TextField()
    # Model call parameters: temperature, max_tokens, ...
    parameters = models.JSONField(default=dict, blank=True)
    change_note = models.CharField(max_length=300, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["step", "number"], name="prompt_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.step} v{self.number}"


class PromptLabel(models.Model):
    """`production` or `candidate`: which version a step runs. Moving it is publish or rollback."""

    class Name(models.TextChoices):
        PRODUCTION = "production"
        CANDIDATE = "candidate"

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="prompt_labels")
    name = models.CharField(max_length=12, choices=Name.choices)
    version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="labels")
    moved_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["step", "name"], name="prompt_label_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.step}: {self.name} → v{self.version.number}"


class Example(models.Model):
    """A labeled example of a step: input data and the expected output. Trains the local model
    and is the evaluation set."""

    class Source(models.TextChoices):
        UPLOAD = "upload"
        REVIEW = "review"

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="examples")
    data = models.JSONField()
    expected = models.JSONField()
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.UPLOAD)
    source_import = models.ForeignKey(
        "ExampleImport", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["step", "-id"], name="example_step_recent")]

    def __str__(self) -> str:
        return f"example {self.pk} of {self.step}"


class FileImport(models.Model):
    """An uploaded file read in the background with its progress: what example imports and
    item uploads share. The file is kept in the row until the import ends, so any worker host
    can read it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    filename = models.CharField(max_length=255)
    content = models.BinaryField(editable=False)
    size = models.PositiveBigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    bytes_done = models.PositiveBigIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    # The first rejected rows, [{"line": 7, "reason": "..."}], for the report.
    rejected_rows = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Written when a worker takes the file and after every batch: a running import whose
    # progress stopped for longer than a task may run lost its worker.
    progress_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-id"]

    @property
    def percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return min(99, int(100 * self.bytes_done / self.size)) if self.size else 0


class ExampleImport(FileImport):
    """An uploaded file of labeled examples for a step."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="example_imports")

    class Meta(FileImport.Meta):
        pass

    def __str__(self) -> str:
        return f"{self.filename} → {self.step}"


class ItemUpload(FileImport):
    """An uploaded file of items (CSV or JSONL) submitted to a pipeline in the background.

    `accepted` counts queued items; duplicates and quarantined items are counted apart, and
    `rejected` counts rows that could not be read as an item at all."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="uploads")
    deduplicated = models.PositiveIntegerField(default=0)
    quarantined = models.PositiveIntegerField(default=0)

    class Meta(FileImport.Meta):
        pass

    def __str__(self) -> str:
        return f"{self.filename} → {self.pipeline}"


class IdempotencyKey(models.Model):
    """An ingest request sent with an Idempotency-Key header, and the answer it got, so that
    the same request sent again gets the same answer and creates nothing."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="idempotency_key_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.client_id}:{self.key}"


class Delivery(models.Model):
    """Sending a finished item to its client's webhook. One per item: a retry resends the same
    delivery (with the same id, for the receiver to deduplicate), never a second one."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        DELIVERED = "delivered"

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="delivery")
    url = models.URLField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"delivery of item {self.item_id}"


class BreakerEvent(models.Model):
    """A change of a provider's circuit breaker (closed, open, half-open), kept as history.

    The breaker's live state is shared by all workers through the cache; this is its record."""

    class State(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open", "half-open"

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="breaker_events")
    at = models.DateTimeField(auto_now_add=True)
    from_state = models.CharField(max_length=10, choices=State.choices)
    to_state = models.CharField(max_length=10, choices=State.choices)
    reason = models.CharField(max_length=500, blank=True)
    # Consecutive failures counted when the breaker changed.
    failures = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["provider", "-at"], name="breaker_event_recent")]

    def __str__(self) -> str:
        return f"{self.provider}: {self.from_state} → {self.to_state}"


class Rollup(models.Model):
    """Per pipeline and minute: what the engine did, added to in one statement per batch, so
    budgets, dashboards and reports never count the item table."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="rollups")
    minute = models.DateTimeField()
    ingested = models.PositiveIntegerField(default=0)
    # Items claimed by a worker (each attempt of each step).
    started = models.PositiveIntegerField(default=0)
    # Model calls made, and what they ended in.
    calls = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    held_for_review = models.PositiveIntegerField(default=0)
    # Review decisions (approve, edit, reject) on held items.
    reviewed = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    quarantined = models.PositiveIntegerField(default=0)
    dead_lettered = models.PositiveIntegerField(default=0)
    failed_transient = models.PositiveIntegerField(default=0)
    failed_processing = models.PositiveIntegerField(default=0)
    failed_system = models.PositiveIntegerField(default=0)
    failed_provider_limit = models.PositiveIntegerField(default=0)
    cache_hits = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=6, default=Decimal("0"))
    cost_saved = models.DecimalField(max_digits=16, decimal_places=6, default=Decimal("0"))
    # Cascade routing: answers escalated to a stronger model, and what answering with the
    # cheaper model saved against calling the strongest one of the route for every item.
    escalations = models.PositiveIntegerField(default=0)
    cascade_saved = models.DecimalField(max_digits=16, decimal_places=6, default=Decimal("0"))

    class Meta:
        ordering = ["pipeline", "minute"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "minute"], name="rollup_pipeline_minute")
        ]

    def __str__(self) -> str:
        return f"{self.pipeline} @ {self.minute:%Y-%m-%d %H:%M}"


class TrainedModel(models.Model):
    """A step's local classifier as trained, stored so that every worker loads the same one
    instead of training its own; trained again on a schedule when the step's examples change."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="trained_models")
    content = models.BinaryField(editable=False)
    # What it was trained on: the examples' count and newest id tell whether it is current.
    examples = models.PositiveIntegerField()
    last_example_id = models.PositiveBigIntegerField(null=True)
    labels = models.JSONField(default=list)
    training_seconds = models.FloatField(default=0)
    trained_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["step", "-id"], name="trained_model_latest")]

    def __str__(self) -> str:
        return f"{self.step} model {self.pk} ({self.examples} examples)"


class LatencyRollup(models.Model):
    """Per pipeline, minute and measure: how many items took how long, counted in the fixed
    buckets of pipelines.histogram, so percentiles over any range come from summed buckets."""

    class Measure(models.TextChoices):
        QUEUE_WAIT = "queue_wait", "queue wait"  # runnable until a worker took it
        PROCESSING = "processing"  # the model call
        END_TO_END = "end_to_end", "end to end"  # received until finished (or delivered)
        REVIEW_WAIT = "review_wait", "review wait"  # held until a person decided

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="+")
    minute = models.DateTimeField()
    measure = models.CharField(max_length=12, choices=Measure.choices)
    bucket = models.PositiveSmallIntegerField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["pipeline", "minute", "measure", "bucket"]
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline", "minute", "measure", "bucket"], name="latency_rollup_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.pipeline} @ {self.minute:%H:%M} {self.measure}[{self.bucket}]={self.count}"


class StepRollup(models.Model):
    """Per step, prompt version and minute: what the version did, so rollout guards and the
    comparison of versions read a few rows instead of counting items. Written by the engine in
    its per-batch statements and by review decisions through `resume`."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="+")
    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="rollups")
    # The prompt version's number (not a key: a version is immutable, its number is enough).
    version = models.PositiveIntegerField()
    minute = models.DateTimeField()
    # Attempts that ended with an answer or an error at this step, and what they ended in.
    started = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    held = models.PositiveIntegerField(default=0)
    # Errors of the call (any class but provider limits, which are not the version's doing).
    failed = models.PositiveIntegerField(default=0)
    # Review decisions on items this version held.
    approved = models.PositiveIntegerField(default=0)
    edited = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    escalations = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=6, default=Decimal("0"))
    cascade_saved = models.DecimalField(max_digits=16, decimal_places=6, default=Decimal("0"))

    class Meta:
        ordering = ["step", "version", "minute"]
        constraints = [
            models.UniqueConstraint(fields=["step", "version", "minute"], name="step_rollup_unique")
        ]

    def __str__(self) -> str:
        return f"{self.step} v{self.version} @ {self.minute:%Y-%m-%d %H:%M}"


class StepLatencyRollup(models.Model):
    """Per step, prompt version and minute: model-call latencies counted in the buckets of
    pipelines.histogram, so a version's p95 comes from summed buckets."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    minute = models.DateTimeField()
    bucket = models.PositiveSmallIntegerField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["step", "version", "minute", "bucket"]
        constraints = [
            models.UniqueConstraint(
                fields=["step", "version", "minute", "bucket"], name="step_latency_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.step_id} v{self.version} @ {self.minute:%H:%M}[{self.bucket}]={self.count}"


def default_rollout_stages() -> list[int]:
    return [5, 25, 50, 100]


class Rollout(models.Model):
    """A candidate prompt version taking a growing share of a step's live traffic, compared
    with production on guard metrics at every stage: rolled back when worse beyond the margin,
    promoted after the last stage."""

    class Status(models.TextChoices):
        RUNNING = "running"
        PAUSED = "paused"
        PROMOTED = "promoted"
        ROLLED_BACK = "rolled_back", "rolled back"

    ACTIVE = (Status.RUNNING, Status.PAUSED)

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="rollouts")
    candidate = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    baseline = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    stages = models.JSONField(
        default=default_rollout_stages,
        help_text="Percent of the step's items the candidate takes at each stage, rising.",
    )
    stage = models.PositiveSmallIntegerField(default=0)
    stage_started_at = models.DateTimeField()
    min_items = models.PositiveIntegerField(
        default=50,
        validators=[MinValueValidator(1)],
        help_text="Items the candidate must finish at a stage before it is judged.",
    )
    rate_margin = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.050"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="How much higher a rate (review, edit, reject, error) the candidate may "
        "have than production, in points of 0 to 1.",
    )
    relative_margin = models.DecimalField(
        max_digits=5,
        decimal_places=3,
        default=Decimal("0.200"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("10"))],
        help_text="How much slower (p95) or dearer (cost per item) the candidate may be, as "
        "a share of production's (0.2: 20%).",
    )
    reason = models.TextField(blank=True)
    # The guard that tripped and its numbers, or the last comparison at promotion.
    evidence = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # One rollout at a time per step.
            models.UniqueConstraint(
                fields=["step"],
                condition=models.Q(status__in=["running", "paused"]),
                name="rollout_one_active_per_step",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step}: v{self.candidate.number} ({self.status})"

    @property
    def share(self) -> int:
        """Percent of the step's items the candidate takes now (0 once finished or paused)."""
        if self.status != self.Status.RUNNING:
            return 0
        return int(self.stages[min(self.stage, len(self.stages) - 1)])


class Evaluation(models.Model):
    """An offline run of one prompt version (and the step's route) over labeled examples or
    recently reviewed items, in the background with progress; kept to be reopened."""

    class Source(models.TextChoices):
        EXAMPLES = "examples", "labeled examples"
        REVIEWED = "reviewed", "recently reviewed items"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="evaluations")
    version = models.ForeignKey(PromptVersion, on_delete=models.CASCADE, related_name="+")
    # A model to run instead of the step's route (comparing models); empty: the route's first.
    model = models.ForeignKey(
        AiModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.EXAMPLES)
    sample_size = models.PositiveIntegerField(
        default=100, validators=[MinValueValidator(1), MaxValueValidator(2000)]
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    # Per case: {"key", "input", "expected", "output", "correct", "passed", "confidence",
    # "cost", "latency_ms", "error"}; keyed so two evaluations compare case by case.
    results = models.JSONField(default=list, blank=True)
    correct = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    latency = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"evaluation {self.pk} of {self.step} v{self.version.number}"

    @property
    def percent(self) -> int:
        if self.status == self.Status.DONE:
            return 100
        return min(99, int(100 * self.done / self.total)) if self.total else 0
