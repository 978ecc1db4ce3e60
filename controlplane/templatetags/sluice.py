from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def dictget(mapping, key):
    """`{{ mapping|dictget:key }}`: a dict lookup with a variable key, None when absent."""
    if isinstance(mapping, dict):
        return mapping.get(key)
    return None
