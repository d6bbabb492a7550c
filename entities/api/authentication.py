"""Who may use the admin REST API: a bearer admin token made by `manage.py create_admin_token`."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from entities import services
from entities.models import AdminToken

# The same code as a client key refused on a route (contract section 6), so clients handle both alike.
UNAUTHORIZED_CODE = "invalid_api_key"


class AdminTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <admin token>`; anything else, a missing header included, is a 401."""

    def authenticate(self, request: Request) -> tuple[None, AdminToken]:
        scheme, _, presented = get_authorization_header(request).decode("latin-1").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise AuthenticationFailed(
                "The admin API needs 'Authorization: Bearer <admin token>' "
                "(made by `python manage.py create_admin_token NAME`).",
                code=UNAUTHORIZED_CODE,
            )
        admin_token = services.admin_token_use(presented=presented)
        if admin_token is None:
            raise AuthenticationFailed("This admin token is unknown or revoked.", code=UNAUTHORIZED_CODE)
        return None, admin_token

    def authenticate_header(self, request: Request) -> str:
        # Without it DRF would turn the 401 into a 403.
        return 'Bearer realm="admin-api"'


class HasAdminToken(BasePermission):
    """Only requests that authenticated with an admin token (should another authenticator be added)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, AdminToken)
