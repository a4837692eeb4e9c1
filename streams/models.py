"""Admin-configured pipelines and their tasks, and the records of runs (conversations, runs, traces)."""

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from .pipelines.dag import KEY_PATTERN
from .pipelines.specs import PipelineSpec, TaskSpec
from .pipelines.validation import validate_spec


def default_provider() -> str:
    """Provider for new tasks: settings.STREAMS["DEFAULT_PROVIDER"]."""
    return settings.STREAMS["DEFAULT_PROVIDER"]


def default_depends_on() -> list[str]:
    """A fresh empty dependency list (a shared mutable default would leak between rows)."""
    return []


class Pipeline(models.Model):
    """A named list of tasks, run for one user input at a time."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        """Listed by slug."""

        ordering = ["slug"]

    def __str__(self) -> str:
        """The name and slug."""
        return f"{self.name} ({self.slug})"

    def to_spec(self) -> PipelineSpec:
        """The immutable spec the streaming core runs (uses prefetched tasks when present)."""
        return PipelineSpec(
            slug=self.slug,
            name=self.name,
            description=self.description,
            tasks=tuple(task.to_spec() for task in self.tasks.all()),
        )

    def validation_errors(self, providers=None) -> list[str]:
        """Problems of the stored pipeline, each naming its task (providers default to settings)."""
        if providers is None:
            from .providers import provider_names

            providers = provider_names()
        return validate_spec(self.to_spec(), providers)

    def validate_tasks(self, providers=None) -> None:
        """Raise ValidationError listing every problem of the stored tasks.

        Not wired into clean(): in the admin the stored tasks are the old ones, and
        refusing to save because of them would make a broken pipeline unfixable.
        The admin validates the submitted tasks instead (see streams.admin).
        """
        errors = self.validation_errors(providers)
        if errors:
            raise ValidationError(errors)


class PipelineTask(models.Model):
    """One LLM call of a pipeline; `position` gives the delivery order."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="tasks")
    position = models.PositiveIntegerField(default=0, help_text="Delivery order: lower comes first.")
    key = models.CharField(
        max_length=64,
        validators=[
            RegexValidator(
                KEY_PATTERN, "A key is a letter or underscore, then letters, digits or underscores."
            )
        ],
    )
    title = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=64, default=default_provider)
    model = models.CharField(max_length=200, blank=True)
    system = models.TextField(blank=True)
    prompt = models.TextField(default=TaskSpec.prompt)
    depends_on = models.JSONField(
        default=default_depends_on, blank=True, help_text="Keys of tasks of this pipeline."
    )
    timeout_s = models.FloatField(null=True, blank=True, help_text="Seconds; empty for the default.")
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    temperature = models.FloatField(null=True, blank=True)
    fallbacks = models.JSONField(
        default=list,
        blank=True,
        help_text="[provider, model] pairs tried in turn if the task fails before its first token.",
    )
    history_messages = models.BooleanField(
        default=False, help_text="Send the conversation's earlier turns as chat messages before the prompt."
    )

    class Meta:
        """Delivery order; a key names one task of its pipeline."""

        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "key"], name="streams_task_unique_key"),
        ]

    def __str__(self) -> str:
        """The key and title."""
        return f"{self.key} ({self.title})" if self.title else self.key

    def to_spec(self) -> TaskSpec:
        """The immutable task spec."""
        return TaskSpec(
            key=self.key,
            title=self.title,
            provider=self.provider,
            model=self.model,
            system=self.system,
            prompt=self.prompt,
            depends_on=tuple(self.depends_on or ()),
            timeout_s=self.timeout_s,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            fallbacks=tuple(tuple(route) for route in self.fallbacks or ()),
            history_messages=self.history_messages,
        )


# --- Records of runs (issue 14): written off the hot path by streams.records.writer ---------


def new_conversation_id() -> str:
    """An opaque, unguessable conversation id."""
    return uuid.uuid4().hex


RUN_STATUSES = [(s, s) for s in ("running", "completed", "failed", "cancelled")]
TASK_STATUSES = [(s, s) for s in ("pending", "completed", "failed", "cancelled")]


class Conversation(models.Model):
    """A series of runs of one owner; each run is one turn."""

    id = models.CharField(primary_key=True, max_length=64, default=new_conversation_id, editable=False)
    # Same strings as run ownership (streams.access.owners.owner_of): "user:1", "session:...".
    owner = models.CharField(max_length=200)
    title = models.CharField(max_length=200, blank=True, help_text="From the first input.")
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now, help_text="When its latest run started.")

    class Meta:
        """Newest first; the chat page lists one owner's conversations by last use."""

        ordering = ["-updated"]
        indexes = [models.Index(fields=["owner", "-updated"], name="streams_conv_owner_updated")]

    def __str__(self) -> str:
        """The title, else the id."""
        return self.title or self.id


class Run(models.Model):
    """One execution of a pipeline for one input, with the pipeline as it ran."""

    run_id = models.CharField(primary_key=True, max_length=64)
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.CASCADE, related_name="runs"
    )
    owner = models.CharField(max_length=200)
    # The slug, not a foreign key: deleting or editing a pipeline does not rewrite history.
    pipeline = models.CharField(max_length=64)
    pipeline_snapshot = models.JSONField(default=dict, help_text="The pipeline spec as it ran.")
    input = models.TextField(blank=True)
    # The run_id of the turn this run follows in its conversation's tree of versions ("": the
    # first turn). An id, not a foreign key: a parent removed by retention (or never written)
    # must not block or take its followers; a branch simply starts at a missing parent.
    parent = models.CharField(max_length=64, blank=True, help_text="The run this one follows (its branch).")
    status = models.CharField(max_length=16, choices=RUN_STATUSES, default="running")
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    incomplete = models.BooleanField(
        default=False, help_text="Some records of the run could not be written (the log says why)."
    )

    class Meta:
        """Newest first; indexed for the admin filters and a conversation's turns in order."""

        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["conversation", "started_at"], name="streams_run_conv_started"),
            models.Index(fields=["pipeline", "-started_at"], name="streams_run_pipeline_started"),
            models.Index(fields=["status", "-started_at"], name="streams_run_status_started"),
            models.Index(fields=["owner", "-started_at"], name="streams_run_owner_started"),
            models.Index(fields=["started_at"], name="streams_run_started"),
        ]

    def __str__(self) -> str:
        """Pipeline and id."""
        return f"{self.pipeline} {self.run_id}"


class TaskRun(models.Model):
    """What one task of a run did: its text (partial when cut short), timing, usage, pieces."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tasks")
    key = models.CharField(max_length=64)
    title = models.CharField(max_length=200, blank=True)
    position = models.PositiveIntegerField(default=0)
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=TASK_STATUSES, default="pending")
    text = models.TextField(blank=True, help_text="What the provider produced (partial when cancelled).")
    delivered_chars = models.PositiveIntegerField(
        default=0, help_text="How much of the text reached the client (a prefix of it)."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=64, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    # The provider's pieces in arrival order (merged pairwise beyond a cap), stored compactly:
    # see streams.records.codec; export_trace gives [[received_at, text], ...].
    pieces = models.JSONField(default=list, blank=True)

    class Meta:
        """Delivery order within a run; a key names one task of its run."""

        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="streams_taskrun_unique_key")]

    def __str__(self) -> str:
        """Key and status."""
        return f"{self.key} ({self.status})"


class RunTrace(models.Model):
    """A run's ordered frames as they were sent; pruned with the run (or alone, traces only)."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True, related_name="trace")
    # The ordered frames as sent, stored compactly (streams.records.codec); export_trace gives
    # [{"seq", "type", "task", "sent_at"}, ...].
    frames = models.JSONField(default=list, blank=True)
    dropped = models.PositiveIntegerField(
        default=0, help_text="task.delta frames beyond the per-run cap that were not traced."
    )

    def __str__(self) -> str:
        """Whose trace."""
        return f"trace of {self.run_id}"


class ApiKey(models.Model):
    """A key for clients that are not browsers (`Authorization: Bearer`); only its hash is stored.

    The key is `strm_<prefix>_<secret>`: the prefix finds the row with one indexed lookup,
    then the salted scrypt hash of the whole key is compared in constant time
    (streams/access/keys.py). Keys are made by `manage.py create_api_key`.
    """

    name = models.CharField(max_length=200)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="Runs started with the key belong to this user (empty: to the key itself).",
    )
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=200, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.BooleanField(default=False, help_text="A revoked key is refused.")

    class Meta:
        """Newest first."""

        ordering = ["-created"]
        verbose_name = "API key"

    def __str__(self) -> str:
        """The name and the public prefix."""
        return f"{self.name} (strm_{self.prefix}_…)"
