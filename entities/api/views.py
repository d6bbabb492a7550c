"""The admin REST API's views: JSON in, a service call, the entity's JSON form out.

Every write is an import of one entity (`entities.services.entity_*`), so it is held to exactly the
importer's rules; errors are raised as DRF exceptions, which the gateway's one exception handler
answers in the error envelope, `param` naming the JSON path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from django.core.exceptions import ObjectDoesNotExist
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from entities import services
from entities.api import schema
from entities.api.authentication import AdminTokenAuthentication, HasAdminToken
from entities.interchange import ImportFailed
from entities.services import API_KEYS, IMAGE_MODELS, ROUTES, EntityKind


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class Unavailable(APIException):
    """The database was busy or away and nothing was written: the contract's database_unavailable."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "database_unavailable"
    wait = 5  # Retry-After, as every database_unavailable answer gives


@contextmanager
def _refusals(kind: EntityKind, entity_id: str | None = None) -> Iterator[None]:
    """Turns a service's refusal into the HTTP error that says it: 400, 404, 409 or 503."""
    try:
        yield
    except ImportFailed as exc:
        # Every problem in the message, so a client fixes them all at once; the first one's path as param.
        message = "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in exc.problems)
        if exc.cause == "unavailable":  # busy or away: a retry may succeed
            raise Unavailable(message) from None
        if exc.cause == "conflict":  # another writer got there first
            raise Conflict(message, code="entity_conflict") from None
        first = exc.problems[0].path or api_settings.NON_FIELD_ERRORS_KEY
        raise ValidationError({first: message}) from None
    except services.EntityConflict as exc:
        code = "entity_in_use" if entity_id else "entity_exists"
        raise Conflict(str(exc), code=code) from None
    except ObjectDoesNotExist:
        raise NotFound(f"No {kind.label} with id {entity_id!r}.", code="not_found") from None


class _AdminView(APIView):
    kind: ClassVar[EntityKind]
    authentication_classes = [AdminTokenAuthentication]
    permission_classes = [HasAdminToken]
    parser_classes = [JSONParser]

    def _location(self, request: Request, entity_id: str) -> str:
        return request.build_absolute_uri(reverse(f"admin-api-{self.kind.key}-item", args=[entity_id]))


class _CollectionView(_AdminView):
    def get(self, request: Request) -> Response:
        return Response({self.kind.key: services.entity_list(kind=self.kind)})

    def post(self, request: Request) -> Response:
        with _refusals(self.kind):
            entity = services.entity_create(kind=self.kind, data=request.data)
        return Response(
            entity, status=status.HTTP_201_CREATED, headers={"Location": self._location(request, entity["id"])}
        )


class _ItemView(_AdminView):
    def get(self, request: Request, entity_id: str) -> Response:
        with _refusals(self.kind, entity_id):
            return Response(services.entity_get(kind=self.kind, entity_id=entity_id))

    def put(self, request: Request, entity_id: str) -> Response:
        with _refusals(self.kind, entity_id):
            entity, created = services.entity_replace(kind=self.kind, entity_id=entity_id, data=request.data)
        if created:
            return Response(
                entity, status=status.HTTP_201_CREATED, headers={"Location": self._location(request, entity_id)}
            )
        return Response(entity)

    def delete(self, request: Request, entity_id: str) -> Response:
        with _refusals(self.kind, entity_id):
            services.entity_delete(kind=self.kind, entity_id=entity_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _documented(
    collection: type[_CollectionView], item: type[_ItemView], entity: type[Any], listing: type[Any], in_use: str = ""
) -> None:
    """Describes one kind's two views in the OpenAPI description, under the tag "Admin API"."""
    kind = collection.kind
    label = kind.label
    a_label = kind.a_label
    bad = schema.error(f"The {label} is invalid; `param` is the JSON path of the first problem.")
    missing = schema.error(f"No {label} with this id.")

    def operation(action: str, summary: str, **kwargs: Any) -> Any:
        return extend_schema(
            operation_id=f"admin_{kind.key}_{action}", summary=summary, tags=[schema.TAG], auth=schema.AUTH, **kwargs
        )

    extend_schema_view(
        get=operation("list", f"List every {label}", responses={200: listing, **schema.ERRORS}),
        post=operation(
            "create",
            f"Create {a_label}",
            request=entity,
            responses={
                201: entity,
                400: bad,
                409: schema.error(
                    f"{a_label[0].upper()}{a_label[1:]} with this id exists (`entity_exists`), or a concurrent "
                    "write took a value this one needs (`entity_conflict`)."
                ),
                **schema.ERRORS,
            },
        ),
    )(collection)
    conflict = {409: schema.error(in_use)} if in_use else {}
    extend_schema_view(
        get=operation("read", f"Read one {label}", responses={200: entity, 404: missing, **schema.ERRORS}),
        put=operation(
            "replace",
            f"Replace (or create) one {label}",
            description="Without a token or secret, the stored one is kept; an `id` in the body must match the URL.",
            request=entity,
            responses={
                200: OpenApiResponse(entity, description="Replaced."),
                201: OpenApiResponse(entity, description="Created: there was none with this id."),
                400: bad,
                409: schema.error("A concurrent write took a value this one needs (`entity_conflict`)."),
                **schema.ERRORS,
            },
        ),
        delete=operation(
            "delete",
            f"Delete one {label}",
            responses={204: OpenApiResponse(description="Deleted."), 404: missing, **conflict, **schema.ERRORS},
        ),
    )(item)


class ImageModelCollection(_CollectionView):
    kind = IMAGE_MODELS


class ImageModelItem(_ItemView):
    kind = IMAGE_MODELS


class RouteCollection(_CollectionView):
    kind = ROUTES


class RouteItem(_ItemView):
    kind = ROUTES


class ApiKeyCollection(_CollectionView):
    kind = API_KEYS


class ApiKeyItem(_ItemView):
    kind = API_KEYS


_documented(
    ImageModelCollection,
    ImageModelItem,
    schema.ImageModelSerializer,
    schema.ImageModelListSerializer,
    in_use="The image model is still a ref of a route; the message names the routes.",
)
_documented(RouteCollection, RouteItem, schema.RouteSerializer, schema.RouteListSerializer)
_documented(ApiKeyCollection, ApiKeyItem, schema.ApiKeySerializer, schema.ApiKeyListSerializer)
