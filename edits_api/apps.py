from django.apps import AppConfig


class EditsApiConfig(AppConfig):
    name = "edits_api"
    verbose_name = "Images API"
