"""The three roles of Sluice and how a user's role is read.

Roles are Django groups of the same name. A superuser counts as an operator.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OPERATOR = "operator"
    REVIEWER = "reviewer"
    CLIENT = "client"


# When a user is (wrongly) in several groups, the most powerful one wins.
ROLE_ORDER = (Role.OPERATOR, Role.REVIEWER, Role.CLIENT)

_CACHE_ATTR = "_sluice_role"


def role_of(user) -> Role | None:
    """The user's role, or None for anonymous, inactive or role-less users (cached per object)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if hasattr(user, _CACHE_ATTR):
        return getattr(user, _CACHE_ATTR)
    role: Role | None
    if user.is_superuser:
        role = Role.OPERATOR
    else:
        names = set(user.groups.values_list("name", flat=True))
        role = next((r for r in ROLE_ORDER if r.value in names), None)
    setattr(user, _CACHE_ATTR, role)
    return role
