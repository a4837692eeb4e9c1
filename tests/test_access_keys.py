"""API keys: made by the command (shown once, stored hashed), verified, cached, revoked in the admin."""

import asyncio
import logging
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from streams.access import keys
from streams.access.keys import KEY_RE, averify, bearer_token, hash_key, key_matches, verify_key
from streams.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    keys.forget_keys()
    yield
    keys.forget_keys()


def create(*args: str) -> str:
    """Run create_api_key; return its output's last line (the key)."""
    out = StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def test_the_command_prints_the_key_last_and_stores_only_its_hash():
    key = create("ci bot")
    assert KEY_RE.fullmatch(key)
    row = ApiKey.objects.get()
    assert row.name == "ci bot" and row.user is None and not row.revoked
    assert key.split("_")[1] == row.prefix
    # Nothing stored carries the secret part.
    stored = " ".join(str(v) for v in ApiKey.objects.values_list().get())
    assert key not in stored and key[18:] not in stored
    assert row.key_hash.startswith("scrypt$") and key_matches(key, row.key_hash)


def test_the_command_binds_a_key_to_a_user_and_refuses_an_unknown_one():
    user = get_user_model().objects.create_user("ada")
    key = create("ada's scripts", "--user", "ada")
    assert ApiKey.objects.get().user == user
    assert verify_key(key).owner == f"user:{user.pk}"
    with pytest.raises(CommandError, match="no user"):
        create("x", "--user", "nobody")


def test_a_key_without_a_user_owns_its_runs_itself():
    key = create("bot")
    info = verify_key(key)
    assert info.owner == f"key:{ApiKey.objects.get().pk}" and info.user_id is None


def test_verification_refuses_wrong_revoked_and_inactive_keys():
    key = create("bot")
    row = ApiKey.objects.get()
    assert verify_key(key) is not None
    assert ApiKey.objects.get().last_used_at is not None
    # Same prefix, another secret; a malformed key; a made-up prefix.
    assert verify_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert verify_key("strm_nothex_x") is None
    assert verify_key(f"strm_{'0' * 12}_{'a' * 43}") is None
    row.revoked = True
    row.save()
    assert verify_key(key) is None
    user = get_user_model().objects.create_user("gone", is_active=False)
    assert verify_key(create("old", "--user", user.username)) is None


def test_hash_uses_a_fresh_salt_and_tolerates_garbage():
    assert hash_key("k") != hash_key("k")
    assert key_matches("k", hash_key("k")) and not key_matches("j", hash_key("k"))
    assert not key_matches("k", "not a hash") and not key_matches("k", "md5$1$1$1$AA==$AA==")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Bearer", ""),
    ],
)
def test_bearer_token(header, token):
    assert bearer_token(header) == token


@pytest.mark.django_db(transaction=True)
async def test_verdicts_are_cached_so_a_revocation_acts_after_the_cache_period(settings):
    from asgiref.sync import sync_to_async

    settings.STREAMS = {**settings.STREAMS, "API_KEY_CACHE_S": 0.2}
    key = await sync_to_async(create)("bot")
    assert await averify(key) is not None
    await ApiKey.objects.all().aupdate(revoked=True)
    assert await averify(key) is not None  # still remembered
    await asyncio.sleep(0.3)
    assert await averify(key) is None


@pytest.mark.django_db(transaction=True)
async def test_no_log_line_carries_the_key(caplog):
    from asgiref.sync import sync_to_async

    caplog.set_level(logging.DEBUG)
    key = await sync_to_async(create)("bot")
    await averify(key)
    await averify(key[:-2] + "zz")
    await averify("strm_" + "f" * 12 + "_" + "q" * 43)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "API key refused" in text
    assert key[18:] not in text and key[18:-2] not in text and "q" * 43 not in text


def test_the_admin_lists_and_revokes_keys_and_never_shows_or_adds_one(admin_client):
    key = create("listed")
    row = ApiKey.objects.get()
    listing = admin_client.get(reverse("admin:streams_apikey_changelist")).content.decode()
    assert "listed" in listing and row.prefix in listing and key[18:] not in listing
    change = admin_client.get(reverse("admin:streams_apikey_change", args=[row.pk])).content.decode()
    assert row.prefix in change and key[18:] not in change and row.key_hash not in change
    assert admin_client.get(reverse("admin:streams_apikey_add")).status_code == 403
    response = admin_client.post(
        reverse("admin:streams_apikey_changelist"),
        {"action": "revoke", "_selected_action": [row.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert ApiKey.objects.get().revoked
    assert verify_key(key) is None
