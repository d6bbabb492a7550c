"""The admin REST API (/api/v1/...): the entities in their JSON form, for infrastructure as code."""
