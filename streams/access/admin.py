"""Admin for API keys: listed by name and public prefix, revoked, never shown (keys are made by a command)."""

from django.contrib import admin, messages

from streams.models import ApiKey

from .keys import forget_keys


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are listed and revoked here; `manage.py create_api_key` makes them (the key is shown once)."""

    list_display = ("name", "key_prefix", "user", "created", "last_used_at", "revoked")
    list_filter = ("revoked",)
    search_fields = ("name", "prefix", "user__username")
    fields = ("name", "user", "key_prefix", "created", "last_used_at", "revoked")
    readonly_fields = ("key_prefix", "created", "last_used_at")
    actions = ("revoke",)

    @admin.display(description="key")
    def key_prefix(self, obj: ApiKey) -> str:
        """The public part of the key; the rest exists only where it was handed out."""
        return f"strm_{obj.prefix}_…"

    def has_add_permission(self, request) -> bool:
        """No: the admin would have to show the new key (run manage.py create_api_key NAME)."""
        return False

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset) -> None:
        """Refuse the keys from now on (other processes within STREAMS_API_KEY_CACHE_S)."""
        count = queryset.filter(revoked=False).update(revoked=True)
        forget_keys()
        self.message_user(request, f"{count} key(s) revoked.", messages.SUCCESS)

    def save_model(self, request, obj, form, change) -> None:
        """Save; a key revoked by editing it is forgotten by this process's cache at once."""
        super().save_model(request, obj, form, change)
        forget_keys()
