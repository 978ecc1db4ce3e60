from __future__ import annotations

from dataclasses import dataclass

from controlplane.roles import Role, role_of


@dataclass(frozen=True)
class NavLink:
    label: str
    url_name: str
    roles: tuple[Role, ...]
    # URL names starting with one of these mark the link as the current section.
    sections: tuple[str, ...]


NAVIGATION = (
    NavLink(
        "Pipelines",
        "pipeline-list",
        (Role.OPERATOR, Role.CLIENT),
        ("pipeline-", "item-", "step-", "prompt-"),
    ),
    NavLink("Dashboards", "dashboard-overview", (Role.OPERATOR, Role.CLIENT), ("dashboard-",)),
    NavLink("Reports", "report-index", (Role.OPERATOR, Role.CLIENT), ("report-",)),
    NavLink("Review", "review-queue", (Role.OPERATOR, Role.REVIEWER), ("review-",)),
    NavLink("Dead letters", "dead-letter-list", (Role.OPERATOR,), ("dead-letter-",)),
    NavLink("Providers", "provider-list", (Role.OPERATOR,), ("provider-",)),
    NavLink("Alerts", "alert-list", (Role.OPERATOR,), ("alert-",)),
    NavLink("Clients", "client-list", (Role.OPERATOR,), ("client-",)),
    NavLink("People", "person-list", (Role.OPERATOR,), ("person-",)),
    NavLink("Audit", "audit-list", (Role.OPERATOR,), ("audit-",)),
    NavLink("System", "system-status", (Role.OPERATOR,), ("system-",)),
)


def navigation(request) -> dict:
    """The links the current user's role may use, and which one is current."""
    user = getattr(request, "user", None)
    role = role_of(user)
    match = getattr(request, "resolver_match", None)
    current = (match.url_name or "") if match else ""
    links = [
        {
            "label": link.label,
            "url_name": link.url_name,
            "active": current.startswith(link.sections),
        }
        for link in NAVIGATION
        if role in link.roles
    ]
    return {"nav_links": links, "user_role": role.value if role else ""}
