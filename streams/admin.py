"""Admin for pipelines: tasks edited inline, the whole pipeline validated before anything is saved."""

import json
import re

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.forms.models import BaseInlineFormSet
from django.urls import reverse

from .models import Pipeline, PipelineTask
from .pipelines.dag import TASK_FIELDS, task_from_fields
from .pipelines.specs import PipelineSpec
from .pipelines.validation import validate_spec
from .providers import provider_names


class ListTextField(forms.Field):
    """A list edited as text (a JSON list is accepted too), stored as a list."""

    widget = forms.TextInput

    def normalize(self, value) -> list:
        """A stored (or already parsed) value as the list it is."""
        return list(value)

    def from_json(self, parsed) -> list:
        """The list a JSON value stands for; ValidationError when it is not one."""
        raise NotImplementedError

    def from_text(self, text: str) -> list:
        """The list typed as text."""
        raise NotImplementedError

    def to_python(self, value):
        """Parse the submitted text (or JSON) into the list."""
        if value in (None, ""):
            return []
        if isinstance(value, list | tuple):
            return self.normalize(value)
        text = str(value).strip()
        if not text.startswith("["):
            return self.from_text(text)
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Not a valid JSON list: {exc}") from exc
        return self.from_json(parsed)

    def has_changed(self, initial, data):
        """Compare parsed lists, so re-saving unchanged text is not a change."""
        try:
            return self.to_python(data) != self.normalize(initial or [])
        except ValidationError:
            return True


class DependsOnField(ListTextField):
    """Task keys typed as `task_a, task_b`."""

    def prepare_value(self, value):
        """Show a stored list as comma-separated keys; leave submitted text as typed."""
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def normalize(self, value) -> list:
        """Keys as strings."""
        return [str(v) for v in value]

    def from_json(self, parsed) -> list:
        """A JSON list of keys."""
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise ValidationError("Expected a list of task keys.")
        return parsed

    def from_text(self, text: str) -> list:
        """Keys separated by commas or spaces."""
        return [part for part in re.split(r"[\s,]+", text) if part]


class FallbacksField(ListTextField):
    """[provider, model] routes typed one a line as `provider model`."""

    widget = forms.Textarea(attrs={"rows": 2, "cols": 60, "placeholder": "openai gpt-4o-mini"})

    def prepare_value(self, value):
        """Show stored routes one a line; leave submitted text as typed."""
        return "\n".join(" ".join(r) for r in value) if isinstance(value, list | tuple) else value

    def normalize(self, value) -> list:
        """Routes as lists."""
        return [list(route) for route in value]

    def from_json(self, parsed) -> list:
        """A JSON list of [provider, model] pairs."""
        if not isinstance(parsed, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(v, str) and v for v in r) for r in parsed
        ):
            raise ValidationError('Expected a list of [provider, model] pairs, e.g. [["openai", "gpt-4o"]].')
        return parsed

    def from_text(self, text: str) -> list:
        """One `provider model` a line; blank lines are skipped."""
        routes = []
        for number, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if parts and len(parts) != 2:
                raise ValidationError(
                    f"Line {number}: expected a provider and a model separated by a space, "
                    f"got {line.strip()!r}."
                )
            if parts:
                routes.append(parts)
        return routes


# Task fields shown side by side in the admin; every other field of TASK_FIELDS gets a line.
ROWS = (("position", "key", "title"), ("provider", "model"), ("timeout_s", "max_tokens", "temperature"))


def task_layout(names: tuple[str, ...]) -> tuple:
    """`names` in order as the inline's rows: a row of ROWS at the place of its first field."""
    rows: list = []
    placed: set[str] = set()
    for name in names:
        if name in placed:
            continue
        row = next((tuple(n for n in r if n in names) for r in ROWS if name in r), (name,))
        placed.update(row)
        rows.append(row if len(row) > 1 else name)
    return tuple(rows)


class PipelineTaskForm(forms.ModelForm):
    """One task row; provider offered as a list of the configured providers."""

    depends_on = DependsOnField(
        required=False, help_text="Keys of tasks of this pipeline that this one needs, comma-separated."
    )
    fallbacks = FallbacksField(
        required=False,
        label="Fallbacks",
        help_text="Tried in turn if the task fails before its first token: one `provider model` a line.",
    )

    class Meta:
        """All editable task fields plus the delivery position."""

        model = PipelineTask
        fields = ("position", *TASK_FIELDS)
        widgets = {
            "system": forms.Textarea(attrs={"rows": 2, "cols": 80}),
            "prompt": forms.Textarea(attrs={"rows": 4, "cols": 80}),
        }

    def __init__(self, *args, **kwargs):
        """Offer the configured providers, plus the current one if it is no longer configured."""
        super().__init__(*args, **kwargs)
        names = provider_names()
        current = self.instance.provider if self.instance.pk else None
        if current and current not in names:
            names = [*names, current]
        self.fields["provider"].widget = forms.Select(choices=[(n, n) for n in names])


class PipelineTaskFormSet(BaseInlineFormSet):
    """Validates the submitted tasks together: keys, dependencies, cycles, order, providers, templates."""

    def _kept_forms(self) -> list[forms.Form]:
        """Forms that become rows, in delivery order (position, then the order on the page)."""
        kept = []
        for index, form in enumerate(self.forms):
            if not getattr(form, "cleaned_data", None):
                continue  # an untouched extra form
            if self.can_delete and self._should_delete_form(form):
                continue
            position = form.cleaned_data.get("position")
            kept.append((position if position is not None else index, index, form))
        return [form for _, _, form in sorted(kept, key=lambda item: item[:2])]

    def clean(self):
        """Build the spec that saving would produce and refuse it if it is not runnable."""
        if any(form.errors for form in self.forms):
            return  # field errors are shown on their rows; the spec cannot be built yet
        self.ordered_forms_for_save = self._kept_forms()
        tasks = tuple(
            task_from_fields({name: form.cleaned_data.get(name) for name in TASK_FIELDS})
            for form in self.ordered_forms_for_save
        )
        parent = self.instance
        spec = PipelineSpec(slug=parent.slug or "", name=parent.name or "", tasks=tasks)
        errors = validate_spec(spec, provider_names())
        if errors:
            raise ValidationError(errors)
        # Django's unique checks come after ours so that a duplicate key is reported by name.
        super().clean()

    def save(self, commit=True):
        """Save, then renumber positions 0..n-1 in the order that was validated."""
        saved = super().save(commit=commit)
        if commit:
            for position, form in enumerate(getattr(self, "ordered_forms_for_save", [])):
                task = form.instance
                if task.pk and task.position != position:
                    task.position = position
                    task.save(update_fields=["position"])
        return saved


class PipelineTaskInline(admin.StackedInline):
    """Tasks of a pipeline; `position` sets the delivery order."""

    model = PipelineTask
    form = PipelineTaskForm
    formset = PipelineTaskFormSet
    extra = 0
    fields = task_layout(("position", *TASK_FIELDS))  # every field the pipeline files have


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):
    """Pipelines with their tasks inline."""

    list_display = ("slug", "name", "task_count", "updated")
    search_fields = ("slug", "name", "description")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created", "updated")
    fields = ("name", "slug", "description", "created", "updated")
    inlines = [PipelineTaskInline]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The change page, with `try_it`: what its "Try it" panel needs to run the saved pipeline.

        The panel runs it as the chat page does (the WebSocket, the staff user's session), so
        its config has the chat page's names. The slug is read from the database: after a
        refused save the form shows the typed one, which is not what would run.
        """
        saved = self.get_object(request, unquote(object_id))
        if saved is not None:
            extra_context = {
                **(extra_context or {}),
                "try_it": {
                    "pipeline": saved.slug,
                    "maxInputChars": settings.STREAMS["MAX_INPUT_CHARS"],
                    "conversationsUrl": reverse("conversations"),
                },
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_queryset(self, request):
        """Count tasks in the list query rather than once per row."""
        return super().get_queryset(request).annotate(num_tasks=Count("tasks"))

    @admin.display(description="tasks", ordering="num_tasks")
    def task_count(self, obj: Pipeline) -> int:
        """Number of tasks."""
        return obj.num_tasks


# Runs and conversations (their admin lives with the records).
# API keys (streams/access/admin.py) register themselves on import.
from .access import admin as _access_admin  # noqa: E402, F401
from .records import admin as records_admin  # noqa: E402, F401
