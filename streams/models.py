"""Admin-configured pipelines and their tasks, stored in the database."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from .dag import KEY_PATTERN, validate_spec
from .specs import PipelineSpec, TaskSpec


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
    prompt = models.TextField(default="{{ input }}")
    depends_on = models.JSONField(
        default=default_depends_on, blank=True, help_text="Keys of tasks of this pipeline."
    )
    timeout_s = models.FloatField(null=True, blank=True, help_text="Seconds; empty for the default.")
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    temperature = models.FloatField(null=True, blank=True)

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
        )


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
