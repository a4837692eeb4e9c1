"""Create the `demo` pipeline from streams/fixtures_demo.json, the one place where it is defined."""

import json
from pathlib import Path

from django.db import migrations

DEMO_FILE = Path(__file__).resolve().parent.parent / "fixtures_demo.json"


def create_demo(apps, schema_editor):
    """Import the demo file with the historical models."""
    from streams.pipelines.files import import_pipelines

    import_pipelines(
        json.loads(DEMO_FILE.read_text(encoding="utf-8")),
        pipeline_model=apps.get_model("streams", "Pipeline"),
        task_model=apps.get_model("streams", "PipelineTask"),
        using=schema_editor.connection.alias,
    )


def delete_demo(apps, schema_editor):
    """Remove the demo pipeline (its tasks cascade)."""
    pipeline_model = apps.get_model("streams", "Pipeline")
    pipeline_model.objects.using(schema_editor.connection.alias).filter(slug="demo").delete()


class Migration(migrations.Migration):
    """Data migration: the demo pipeline out of the box."""

    dependencies = [("streams", "0001_initial")]

    operations = [migrations.RunPython(create_demo, delete_demo)]
