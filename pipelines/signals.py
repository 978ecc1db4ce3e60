"""The engine's extension points. Layers above `pipelines` listen here; `pipelines` never
imports them. Each is sent once per batch, inside the engine's transaction, so a receiver that
writes (opens review tasks) does so in that same transaction and in few statements.

items_held: the gate held items for a person.
    Argument: held, a list of Held(item, step, reason); each item's status is in_review.

items_sampled_for_audit: the gate accepted items and a share of them (the step's audit rate)
    was drawn for a blind audit: a person labels them without seeing the model's answer, which
    measures the true error rate of what is accepted without review. The items go on as usual.
    Argument: sampled, a list of Sampled(item, step, output).

step_created: a step was added to a pipeline, sent inside the creating transaction (review
    opens the step's queue, so members can be added before anything is held there).
    Argument: step.

rollout_finished: a gradual rollout of a prompt version was promoted or rolled back, sent after
    commit. Arguments: rollout (its status, reason and evidence say what happened and why) and
    automatic (True when a guard or the last stage decided, False when a person did). The shell
    raises an alert for an automatic rollback.

pipeline_paused: the engine paused a pipeline because of a system error (bad configuration:
    a prompt template that no longer parses, a route with no usable model, an output schema or
    rules that are not valid, a provider that cannot be built, such as a missing API key
    variable), sent after commit. Its items went back to the queue and wait. Arguments:
    pipeline, reason (what broke, in the operator's words) and error_class ("system"). The
    shell raises an alert; resuming the pipeline resolves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.dispatch import Signal

if TYPE_CHECKING:
    from pipelines.models import Item, Step


@dataclass(frozen=True)
class Held:
    item: Item
    step: Step
    reason: str


@dataclass(frozen=True)
class Sampled:
    item: Item
    step: Step
    output: Any


items_held = Signal()
items_sampled_for_audit = Signal()
step_created = Signal()
rollout_finished = Signal()
pipeline_paused = Signal()
