"""Runs of a conversation form a tree of versions: each run names the run it follows."""

from django.db import migrations, models

BATCH = 1000


def link_existing_runs(apps, schema_editor):
    """Conversations recorded before versions are one branch: each run follows the one before it."""
    Run = apps.get_model("streams", "Run")
    db = schema_editor.connection.alias
    runs = (
        Run.objects.using(db)
        .filter(conversation__isnull=False)
        .order_by("conversation_id", "started_at")
        .values_list("run_id", "conversation_id")
    )
    previous: tuple[str, str] | None = None
    changed = []
    for run_id, conversation_id in runs.iterator(chunk_size=BATCH):
        if previous is not None and previous[1] == conversation_id:
            changed.append(Run(run_id=run_id, parent=previous[0]))
        previous = (run_id, conversation_id)
        if len(changed) >= BATCH:
            Run.objects.using(db).bulk_update(changed, ["parent"])
            changed = []
    Run.objects.using(db).bulk_update(changed, ["parent"])


class Migration(migrations.Migration):
    dependencies = [
        ("streams", "0006_api_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="parent",
            field=models.CharField(
                blank=True, help_text="The run this one follows (its branch).", max_length=64
            ),
        ),
        migrations.RunPython(link_existing_runs, migrations.RunPython.noop, elidable=True),
    ]
