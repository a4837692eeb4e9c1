"""Admin for operators: runs (filters, tasks side by side, a timeline, trace download), conversations."""

import json

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from ..models import Conversation, Run
from .codec import decode_frames
from .timeline import timeline_svg
from .trace import export_trace


class OwnerFilter(admin.SimpleListFilter):
    """The owners of the latest runs (any owner: the search box or ?owner=...)."""

    title = "owner"
    parameter_name = "owner"

    def lookups(self, request, model_admin):
        """Up to 20 distinct owners, most recent first."""
        seen: dict[str, None] = {}
        for owner in Run.objects.order_by("-started_at").values_list("owner", flat=True)[:500]:
            seen.setdefault(owner, None)
            if len(seen) == 20:
                break
        return [(o, o) for o in seen]

    def queryset(self, request, queryset):
        """Runs of the chosen owner."""
        return queryset.filter(owner=self.value()) if self.value() else queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records are written by the server only; operators read them (and may delete them)."""

    def has_add_permission(self, request, obj=None):
        """No hand-made records."""
        return False

    def has_change_permission(self, request, obj=None):
        """No edited records: the page is a view."""
        return False


def _ts(value):
    """A datetime as epoch seconds (None stays None)."""
    return value.timestamp() if value is not None else None


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    """Runs with their tasks side by side, a timeline and the trace."""

    list_display = ("run_id", "pipeline", "status", "owner", "started_at", "seconds", "incomplete")
    list_filter = ("pipeline", "status", OwnerFilter, "started_at", "incomplete")
    search_fields = ("run_id", "owner", "input", "conversation__id")
    date_hierarchy = "started_at"
    list_select_related = ("conversation",)
    fields = (
        ("run_id", "pipeline", "status"),
        ("owner", "conversation_link", "parent"),
        ("started_at", "ended_at", "incomplete"),
        ("error_code", "error_message"),
        "input",
        "trace_link",
        "timeline",
        "tasks_side_by_side",
        "pipeline_snapshot",
    )
    readonly_fields = tuple(n for entry in fields for n in (entry if isinstance(entry, tuple) else (entry,)))

    @admin.display(description="s")
    def seconds(self, run: Run):
        """How long the run took."""
        return round((run.ended_at - run.started_at).total_seconds(), 2) if run.ended_at else None

    @admin.display(description="conversation")
    def conversation_link(self, run: Run):
        """A link to the run's conversation."""
        if run.conversation_id is None:
            return "-"
        url = reverse("admin:streams_conversation_change", args=[run.conversation_id])
        return format_html('<a href="{}">{}</a>', url, run.conversation)

    @admin.display(description="trace")
    def trace_link(self, run: Run):
        """The export_trace JSON, as a download."""
        url = reverse("admin:streams_run_trace", args=[run.pk])
        return format_html('<a href="{}" download>{}.json</a>', url, run.pk)

    @admin.display(description="timeline")
    def timeline(self, run: Run):
        """Per task: when it ran, its first token, when its frames were delivered."""
        t0 = _ts(run.started_at)
        tasks = []
        for t in run.tasks.all():
            started = _ts(t.started_at)
            first = t0 + t.pieces["us"][0] / 1e6 if t.pieces else None
            if first is None and started is not None and t.ttft_ms is not None:
                first = started + t.ttft_ms / 1000
            tasks.append(
                {
                    "key": t.key,
                    "title": t.title,
                    "status": t.status,
                    "started_at": started,
                    "first_at": first,
                    "ended_at": _ts(t.ended_at),
                }
            )
        frames = decode_frames(run.trace.frames, t0) if hasattr(run, "trace") else []
        end = _ts(run.ended_at) or max([f["sent_at"] for f in frames] + [t0])
        # Every piece of the markup is escaped by the builder.
        return mark_safe(timeline_svg(t0, end, tasks, frames))

    @admin.display(description="tasks")
    def tasks_side_by_side(self, run: Run):
        """One column per task: status, provider, timing, usage, error, text."""
        tasks = list(run.tasks.all())
        if not tasks:
            return "-"
        rows = [
            ("status", [t.status for t in tasks]),
            ("provider / model", [f"{t.provider} / {t.model or '-'}" for t in tasks]),
            ("ttft ms", [t.ttft_ms for t in tasks]),
            ("duration ms", [t.duration_ms for t in tasks]),
            ("tokens (prompt / completion)", [f"{t.prompt_tokens} / {t.completion_tokens}" for t in tasks]),
            ("finish reason", [t.finish_reason or "-" for t in tasks]),
            ("error", [f"{t.error_code}: {t.error_message}" if t.error_code else "-" for t in tasks]),
            ("delivered chars", [f"{t.delivered_chars} of {len(t.text)}" for t in tasks]),
        ]
        head = format_html_join("", "<th>{} <small>{}</small></th>", ((t.key, t.title) for t in tasks))
        body = format_html_join(
            "",
            "<tr><th>{}</th>{}</tr>",
            ((label, format_html_join("", "<td>{}</td>", ((v,) for v in values))) for label, values in rows),
        )
        texts = format_html_join(
            "",
            '<td style="vertical-align:top"><div style="white-space:pre-wrap;max-height:24em;'
            'overflow:auto;min-width:14em">{}</div></td>',
            ((t.text,) for t in tasks),
        )
        return format_html(
            '<table class="streams-tasks"><tr><th></th>{}</tr>{}<tr><th>text</th>{}</tr></table>',
            head,
            body,
            texts,
        )

    def get_urls(self):
        """Adds <run>/trace.json."""
        own = [
            path(
                "<path:object_id>/trace.json",
                self.admin_site.admin_view(self.trace_view),
                name="streams_run_trace",
            )
        ]
        return own + super().get_urls()

    def trace_view(self, request, object_id: str):
        """The run's export_trace JSON as a download."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        data = export_trace(object_id)
        if data is None:
            raise Http404("no such run")
        response = HttpResponse(
            json.dumps(data, ensure_ascii=False, indent=1), content_type="application/json; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="trace-{data["run_id"]}.json"'
        return response


class RunInline(admin.TabularInline):
    """A conversation's turns, oldest first."""

    model = Run
    fields = ("started_at", "pipeline", "status", "short_input", "incomplete")
    readonly_fields = fields
    ordering = ("started_at",)
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        """Turns come from runs only."""
        return False

    @admin.display(description="input")
    def short_input(self, run: Run):
        """The first line of the input."""
        return (run.input.splitlines() or [""])[0][:120]


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    """Conversations with their turns."""

    list_display = ("id", "title", "owner", "turns", "updated")
    search_fields = ("id", "title", "owner")
    date_hierarchy = "updated"
    fields = ("id", "owner", "title", "created", "updated")
    readonly_fields = fields
    inlines = [RunInline]

    def get_queryset(self, request):
        """Count turns in the list query."""
        return super().get_queryset(request).annotate(num_runs=Count("runs"))

    @admin.display(description="turns", ordering="num_runs")
    def turns(self, conversation: Conversation) -> int:
        """Number of runs."""
        return conversation.num_runs
