"""The engine's extension points. Layers above `pipelines` listen here; `pipelines` never
imports them.

item_held: sent inside the engine's transaction when the gate holds an item for a person.
    Arguments: item (the Item, status in_review), step (the Step), reason (str).
    A receiver that opens a review task does so in that same transaction.
"""

from __future__ import annotations

from django.dispatch import Signal

item_held = Signal()
