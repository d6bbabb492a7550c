"""No admin page shows a secret: every page of every registered model, walked over real HTTP.

Logged in through the login form as a superuser and as a staff user with only the view
permissions, the walk GETs every admin URL (site pages, each model's changelist, add page,
and each object's change, history and delete pages, custom admin URLs included) and the
delete-selected confirmation, and looks for each secret of the test entities in every form a
page could leak it: whole, any 5 characters of it in a row (the mask shows the last 4), base64
in any alignment, hex, and the stored ciphertext.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.urls import URLPattern, URLResolver, reverse

from edits_api.models import UsageRecord
from entities import services
from entities.models import ApiKey, ImageModel, Route, RouteRef
from tests.admin_login import admin_login

PASSWORD = "a-long-admin-password-0001"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    """The default hasher costs ~1 s per login on a busy machine; the login path is the same."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def random_secret(prefix: str) -> str:
    """`prefix` and 42 random characters cycling upper case, lower case, digit: any 5 in a row mix
    all three, so they cannot be met by chance in a page's words or numbers."""
    return prefix + "".join(
        secrets.choice(string.ascii_uppercase) + secrets.choice(string.ascii_lowercase) + secrets.choice(string.digits)
        for _ in range(14)
    )


WRONG_PASSWORD = random_secret("")  # any 5 of its characters in a row shown would be a leak


def leak_forms(secret: str, window: int = 5) -> Iterator[str]:
    """Every string whose presence in a page would leak (part of) `secret`."""
    yield from (secret[i : i + window] for i in range(len(secret) - window + 1))
    raw = secret.encode()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode, base64.b32encode):
            encoded = encode(raw[offset:]).decode().rstrip("=")
            yield from (encoded[i : i + 8] for i in range(0, len(encoded) - 8, 4))
    hexed = raw.hex()
    yield from (hexed[i : i + 10] for i in range(0, len(hexed) - 10, 2))


@pytest.fixture
def secrets_in_db(monkeypatch: pytest.MonkeyPatch, transactional_db: None) -> dict[str, str]:
    """Entities of every kind, with the secrets they hold (and the ciphertexts of the tokens)."""
    literal = random_secret("sk-")
    from_env = random_secret("env-")
    monkeypatch.setenv("ADMIN_WALK_TOKEN", from_env)
    openai = ImageModel(id="img-openai", name="OpenAI", provider="openai", edition={"enabled": True})
    openai.set_token(literal)
    services.image_model_save(image_model=openai)
    gemini = ImageModel(id="img-gemini", name="Gemini", provider="gemini")
    gemini.set_token("${env.ADMIN_WALK_TOKEN}")
    services.image_model_save(image_model=gemini)
    route = Route.objects.create(id="r1", name="R1", domains=["api.example.com"], edit_plugin_enabled=True)
    RouteRef.objects.create(route=route, plugin=RouteRef.EDIT, image_model=openai, position=0)
    key = ApiKey(id="k1", name="K1")
    key_secret = random_secret("gw-")  # as issued, but drawn so that no 5 characters are met by chance
    key.set_secret(key_secret)
    services.api_key_save(api_key=key)
    key.routes.set([route])
    UsageRecord.objects.create(endpoint="edits", route_id="r1", image_model_id="img-openai", status=502)
    return {
        "literal token": literal,
        "env token": from_env,
        "api key secret": key_secret,
        # After the version and timestamp, which other tokens share. Not a secret alone, so whole
        # runs of 12 count: shorter runs of random base64 could be met by chance.
        "ciphertext": openai.token[12:],
        "wrong password": WRONG_PASSWORD,
    }


def _named_patterns(patterns: list[Any]) -> Iterator[URLPattern]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _named_patterns(pattern.url_patterns)
        elif pattern.name:
            yield pattern


def admin_urls() -> list[str]:
    """Every admin URL a GET can reach, with each stored object's id where the URL takes one."""
    urls = []
    for model, model_admin in admin.site._registry.items():
        for pattern in _named_patterns(model_admin.get_urls()):
            arguments = set(pattern.pattern.regex.groupindex)
            if not arguments:
                urls.append(reverse(f"admin:{pattern.name}"))
            elif arguments in ({"object_id"}, {"id"}):  # auth's user password page names it "id"
                urls.extend(
                    reverse(f"admin:{pattern.name}", args=[quote(pk)])
                    for pk in model._default_manager.values_list("pk", flat=True)
                )
            else:
                pytest.fail(f"the walk does not know how to fill {pattern.name} {arguments}: teach it")
    app_labels = {model._meta.app_label for model in admin.site._registry}
    for pattern in _named_patterns(admin.site.get_urls()):
        arguments = set(pattern.pattern.regex.groupindex)
        if pattern.name in ("logout", "view_on_site"):
            continue  # logout is POST only; view_on_site redirects away from the admin
        if not arguments:
            urls.append(reverse(f"admin:{pattern.name}"))
        elif arguments == {"app_label"}:
            urls.extend(reverse(f"admin:{pattern.name}", args=[label]) for label in sorted(app_labels))
        elif pattern.name not in {name for m in admin.site._registry for name in _model_names(m)}:
            pytest.fail(f"the walk does not know how to fill {pattern.name} {arguments}: teach it")
    return sorted(set(urls))


def _model_names(model: Any) -> set[str]:
    return {p.name for p in _named_patterns(admin.site._registry[model].get_urls())}


def delete_confirmations(session: requests.Session, base: str) -> Iterator[requests.Response]:
    """The delete-selected confirmation page of each changelist, which lists the objects by name."""
    for model in admin.site._registry:
        pks = [str(pk) for pk in model._default_manager.values_list("pk", flat=True)]
        if not pks:
            continue
        url = base + reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        yield session.post(
            url,
            data={
                "action": "delete_selected",
                "_selected_action": pks,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers={"Referer": url},
            timeout=10,
        )


def assert_no_secret(pages: dict[str, str], secret_values: dict[str, str]) -> None:
    patterns = {
        kind: re.compile("|".join(map(re.escape, set(leak_forms(secret, 12 if kind == "ciphertext" else 5)))))
        for kind, secret in secret_values.items()
    }
    leaks = [
        f"{kind} ({found.group()!r}) on {url}"
        for kind, pattern in patterns.items()
        for url, text in pages.items()
        if (found := pattern.search(text))
    ]
    assert not leaks, "\n".join(leaks)


def walk(session: requests.Session, base: str) -> dict[str, str]:
    pages = {}
    for url in admin_urls():
        response = session.get(base + url, timeout=10)
        assert response.status_code < 500, (url, response.status_code)
        pages[url] = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    for response in delete_confirmations(session, base):
        pages[f"delete_selected {response.url}"] = response.text
    return pages


def test_no_admin_page_shows_a_secret_to_a_superuser(live_server: Any, secrets_in_db: dict[str, str]) -> None:
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    admin_login(live_server.url, "root", WRONG_PASSWORD)  # a failed attempt, recorded by django-axes
    session, answer = admin_login(live_server.url, "root", PASSWORD)
    assert answer.url.endswith("/admin/"), answer.text[:300]
    # A token set through the form as an operator would: the history now has a change entry.
    change = live_server.url + reverse("admin:entities_imagemodel_change", args=["img-gemini"])
    page = session.get(change, timeout=10).text
    new_token = random_secret("sk-new-")
    form = _change_form(page)
    form.update(new_token=new_token, csrfmiddlewaretoken=session.cookies["csrftoken"])
    assert session.post(change, data=form, headers={"Referer": change}, timeout=10).status_code == 200

    pages = walk(session, live_server.url)

    assert ImageModel.objects.get(pk="img-gemini").plain_token() == new_token
    assert len(pages) > 40  # the walk really went through the admin
    assert any("…" + secrets_in_db["literal token"][-4:] in text for text in pages.values())  # masked, shown
    assert_no_secret(pages, {**secrets_in_db, "token set in the form": new_token})


def test_no_admin_page_shows_a_secret_to_a_view_only_staff_user(
    live_server: Any, secrets_in_db: dict[str, str]
) -> None:
    viewer = User.objects.create_user("viewer", "viewer@example.com", PASSWORD, is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    session, answer = admin_login(live_server.url, "viewer", PASSWORD)
    assert answer.url.endswith("/admin/"), answer.text[:300]

    pages = walk(session, live_server.url)

    assert_no_secret(pages, secrets_in_db)
    health = reverse("admin:edits_api_providerhealth_change", args=["img-openai"])
    assert "Last error" in pages[health]  # the page works, only without the token


def _change_form(page: str) -> dict[str, Any]:
    """The fields of an image model's change form as the browser would submit them unchanged."""
    data: dict[str, Any] = {}
    for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", page):
        name = re.search(r'name="([^"]+)"', tag)
        if not name or name.group(1) in ("csrfmiddlewaretoken", "new_token", "clear_token"):
            continue
        if 'type="checkbox"' in tag:
            if "checked" in tag:
                data[name.group(1)] = "on"
            continue
        value = re.search(r'value="([^"]*)"', tag)
        data[name.group(1)] = value.group(1) if value else ""
    for name, body in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', page, re.S):
        data[name] = body.strip()
    for name, options in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', options)
        data[name] = chosen.group(1) if chosen else ""
    data["_continue"] = "Save and continue editing"
    return data
