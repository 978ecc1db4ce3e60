from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from controlplane import selectors, services
from controlplane.access import role_required
from controlplane.forms import ClientForm, ClientLimitsForm, PersonForm, copy_errors
from controlplane.htmx import redirect_after_post
from controlplane.params import parse_id
from controlplane.roles import Role, role_of
from controlplane.throttle import login_failed, login_succeeded, login_throttled

LANDING = {
    Role.OPERATOR: "pipeline-list",
    # A client lands on its own reports (report-index sends it to its client's report).
    Role.CLIENT: "report-index",
    Role.REVIEWER: "review-queue",
}


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("login")
    role = role_of(request.user)
    if role is None:
        raise PermissionDenied("Your account has no role yet: ask an operator to assign one.")
    return redirect(LANDING[role])


class LoginView(auth_views.LoginView):
    """Django's login, refusing with 429 after too many failures for a username or address."""

    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")
        ip = request.META.get("REMOTE_ADDR", "")
        if login_throttled(username=username, ip=ip):
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, "Too many failed attempts. Wait a few minutes and try again.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        login_failed(
            username=self.request.POST.get("username", ""),
            ip=self.request.META.get("REMOTE_ADDR", ""),
        )
        return super().form_invalid(form)

    def form_valid(self, form):
        login_succeeded(username=form.get_user().get_username())
        return super().form_valid(form)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def client_list(request: HttpRequest) -> HttpResponse:
    form = ClientForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                client = services.client_create(actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                copy_errors(form, exc)
            else:
                messages.success(request, f"Client “{client.name}” created.")
                return redirect_after_post(request, "client-list")
        status = 422
    context = {"clients": selectors.client_list_for_user(user=request.user), "form": form}
    if request.htmx and request.method == "POST":
        return render(request, "controlplane/clients.html#client-form", context, status=status)
    return render(request, "controlplane/clients.html", context, status=status)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def person_list(request: HttpRequest) -> HttpResponse:
    form = PersonForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                person = services.user_create(
                    username=data["username"],
                    email=data["email"],
                    password=data["password"],
                    role=Role(data["role"]),
                    clients=data["clients"],
                    actor=request.user,
                )
            except ValidationError as exc:
                copy_errors(form, exc)
            else:
                messages.success(request, f"{person.get_username()} can now sign in.")
                return redirect_after_post(request, "person-list")
        status = 422
    people = [
        {
            "user": person,
            "role": role_of(person),
            "clients": [m.client for m in person.memberships.all()],
        }
        for person in selectors.user_list()
    ]
    context = {"people": people, "form": form}
    if request.htmx and request.method == "POST":
        return render(request, "controlplane/people.html#person-form", context, status=status)
    return render(request, "controlplane/people.html", context, status=status)


@require_GET
@role_required(Role.OPERATOR)
def system_status(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    heartbeats = [
        {"beat": beat, "age": (now - beat.last_seen).total_seconds()}
        for beat in selectors.heartbeat_list()
    ]
    context = {
        "heartbeats": heartbeats,
        "mode": _mode(),
        "audit_entries": selectors.audit_entry_list(limit=20),
    }
    return render(request, "controlplane/system.html", context)


@never_cache
@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def client_keys(request: HttpRequest, slug: str) -> HttpResponse:
    client = selectors.client_get_for_user(user=request.user, slug=slug)
    error = limits_error = ""
    if request.method == "POST":
        if "ingest_limit_per_minute" in request.POST:
            limits = ClientLimitsForm(request.POST)
            if limits.is_valid():
                try:
                    services.client_limits_set(
                        client=client, actor=request.user, **limits.cleaned_data
                    )
                except ValidationError as exc:
                    copy_errors(limits, exc)
                else:
                    messages.success(request, "Budget and limits saved.")
                    return redirect_after_post(request, "client-keys", client.slug)
            limits_error = "; ".join(
                f"{name.replace('_', ' ')}: {' '.join(problems)}"
                for name, problems in limits.errors.items()
            )
        elif "webhook_url" in request.POST:
            try:
                services.client_webhook_set(
                    client=client, url=request.POST["webhook_url"], actor=request.user
                )
            except ValidationError as exc:
                error = " ".join(exc.messages)
            else:
                messages.success(request, "Webhook saved.")
                return redirect_after_post(request, "client-keys", client.slug)
        elif request.POST.get("revoke"):
            api_key = selectors.api_key_get(client=client, pk=request.POST["revoke"])
            services.api_key_revoke(api_key=api_key, actor=request.user)
            messages.success(request, f"Key {api_key.prefix}… revoked.")
            return redirect_after_post(request, "client-keys", client.slug)
        else:
            try:
                api_key, key = services.api_key_create(
                    client=client, name=request.POST.get("name", ""), actor=request.user
                )
            except ValidationError as exc:
                error = " ".join(exc.messages)
            else:
                # Shown on the next page only (post, redirect, get): a reload neither creates
                # a second key nor shows this one again.
                request.session["new_api_key"] = key
                return redirect_after_post(request, "client-keys", client.slug)
    context = {
        "client": client,
        "limits_form": ClientLimitsForm(
            initial={
                "monthly_budget": client.monthly_budget,
                "ingest_limit_per_minute": client.ingest_limit_per_minute,
            }
        ),
        "keys": selectors.api_key_list(client=client),
        "new_key": request.session.pop("new_api_key", None),
        "error": error,
        "limits_error": limits_error,
    }
    failed = error or limits_error
    return render(request, "controlplane/client_keys.html", context, status=422 if failed else 200)


AUDIT_PAGE = 50


@require_GET
@role_required(Role.OPERATOR)
def audit_list(request: HttpRequest) -> HttpResponse:
    filters = {
        "action": request.GET.get("action", "").strip(),
        "client": request.GET.get("client", "").strip(),
        "actor": request.GET.get("actor", "").strip(),
    }
    entries = list(
        selectors.audit_entry_search(
            limit=AUDIT_PAGE + 1, before=parse_id(request.GET.get("before")), **filters
        )
    )
    context = {
        "entries": entries[:AUDIT_PAGE],
        "next_before": entries[AUDIT_PAGE - 1].pk if len(entries) > AUDIT_PAGE else None,
        "filters": filters,
        "clients": selectors.client_list_for_user(user=request.user),
        "actions": selectors.audit_action_list(),
    }
    return render(request, "controlplane/audit.html", context)


def _mode() -> dict[str, str]:
    engine = connections[DEFAULT_DB_ALIAS].vendor
    return {
        "database": "PostgreSQL" if engine == "postgresql" else "SQLite (embedded)",
        "broker": "Redis" if settings.REDIS_URL else "database (ORM)",
        "channel_layer": "Redis" if settings.REDIS_URL else "in-memory (this process)",
        "environment": settings.SLUICE_ENV,
    }


# --- Probes for load balancers and Kubernetes ---------------------------------------------


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answering. Checks nothing else, so it never flaps with a dependency."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready for traffic: the database answers, migrations are applied, the broker answers."""
    checks: dict[str, dict[str, str]] = {}
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"status": "ok", "vendor": connection.vendor}
    except Exception as exc:
        checks["database"] = {"status": "error", "error": _short(exc)}
    if checks["database"]["status"] == "ok":
        try:
            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
            checks["migrations"] = (
                {"status": "ok"}
                if not pending
                else {"status": "error", "error": f"{len(pending)} migrations not applied"}
            )
        except Exception as exc:
            checks["migrations"] = {"status": "error", "error": _short(exc)}
    else:
        checks["migrations"] = {"status": "error", "error": "database unreachable"}
    checks["broker"] = _broker_check(checks["database"])
    ready = all(check["status"] == "ok" for check in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "error", "checks": checks}, status=200 if ready else 503
    )


def _broker_check(database_check: dict[str, str]) -> dict[str, str]:
    if not settings.REDIS_URL:
        return {"status": database_check["status"], "kind": "orm"}
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
        return {"status": "ok", "kind": "redis"}
    except Exception as exc:
        return {"status": "error", "kind": "redis", "error": _short(exc)}


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
