import pytest

from entities.models import ImageModel


@pytest.mark.django_db
def test_literal_token_is_encrypted_at_rest():
    ImageModel.objects.create(id="m1", name="M1", provider="openai", token="sk-test-literal-1234")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM entities_imagemodel WHERE id = 'm1'")
        stored = cursor.fetchone()[0]
    assert "sk-test-literal" not in stored
    assert ImageModel.objects.get(id="m1").plain_token() == "sk-test-literal-1234"
