"""`manage.py create_api_key NAME [--user USERNAME]`: make an API key; the key is the last line printed."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from streams.access.keys import create_key


class Command(BaseCommand):
    """Create an API key and print it once (only its hash is stored)."""

    help = "Create an API key for non-browser clients; the key is printed once, as the last line."

    def add_arguments(self, parser):
        """NAME and --user."""
        parser.add_argument("name", help="what the key is for (shown in the admin)")
        parser.add_argument(
            "--user", metavar="USERNAME", help="runs started with the key belong to this user"
        )

    def handle(self, *args, name: str, user: str | None = None, **options):
        """Make the key, print it."""
        owner = None
        if user is not None:
            model = get_user_model()
            try:
                owner = model.objects.get(**{model.USERNAME_FIELD: user})
            except model.DoesNotExist:
                raise CommandError(f"no user {user!r}") from None
        row, key = create_key(name.strip() or "unnamed", owner)
        whose = f"user {owner}" if owner else "its own runs"
        self.stdout.write(f"API key {row.pk} ({row.name}) for {whose}; store it now, it is not shown again:")
        self.stdout.write(key)
