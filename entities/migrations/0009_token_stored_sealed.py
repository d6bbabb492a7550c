"""Tokens keep their stored form in Python too: `${env.NAME}` references were encrypted like
literals; they are stored as written now, and literals stay Fernet ciphertext (re-encrypted with
the first key). Rows no key decrypts are left as they are (the gateway reports them at call time).
"""

from django.db import migrations

import entities.models


def _unseal_references(apps, schema_editor):
    from entities import crypto
    from entities.models import env_reference

    ImageModel = apps.get_model("entities", "ImageModel")
    for pk, stored in ImageModel.objects.exclude(token="").values_list("pk", "token"):
        plain = crypto.decrypt(stored)
        if plain == crypto.UNDECRYPTABLE:
            continue
        sealed = plain if env_reference(plain) else crypto.rotate(stored)
        ImageModel.objects.filter(pk=pk).update(token=sealed)


def _seal_references(apps, schema_editor):
    from entities import crypto
    from entities.models import env_reference

    ImageModel = apps.get_model("entities", "ImageModel")
    for pk, stored in ImageModel.objects.exclude(token="").values_list("pk", "token"):
        if env_reference(stored):
            ImageModel.objects.filter(pk=pk).update(token=crypto.encrypt(stored))


class Migration(migrations.Migration):
    dependencies = [
        ("entities", "0008_apikey_budget_expiry_models"),
    ]

    operations = [
        migrations.AlterField(
            model_name="imagemodel",
            name="token",
            field=entities.models.SealedSecretField(
                blank=True,
                default="",
                help_text="A literal key (encrypted at rest) or ${env.NAME}, read at call time.",
            ),
        ),
        migrations.RunPython(_unseal_references, _seal_references),
    ]
