"""The OpenAPI 3.1 document of the JSON API (``GET /api/v1/openapi.json``).

Written out by hand rather than generated: the API is small, and a literal document is the
contract a host application's developer reads. Tests (schemathesis) check the running API
against it, so the two cannot drift silently. Every operation lists every status it can answer,
each error body has the same ``{"error": {"code", "message"}}`` shape, and nothing in any
response schema can hold a secret except the access-token vending response, which exists to
hand one out.
"""

from __future__ import annotations

from typing import Any

from pdauth.service.connect_sessions import OWNER_PATTERN

__all__ = ["API_VERSION", "EVENT_TYPE_PATTERN", "ID_PATTERN", "openapi_document"]

API_VERSION = "1.0.0"

_TS = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_COMMON_ERRORS = {
    "400": _error("The request is malformed (bad JSON, a parameter out of range, …)."),
    "401": _error("Missing or wrong API key."),
    "413": _error("The request body is too large."),
    "414": _error("The URL is too long."),
}

ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
EVENT_TYPE_PATTERN = "^[a-z][a-z_]{0,40}(\\.[a-z][a-z_]{0,40}){1,3}$"
_ID_PATTERN = ID_PATTERN
_OWNER_PARAM = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": OWNER_PATTERN}

_CONNECTION_ID = {
    "name": "connection_id",
    "in": "path",
    "required": True,
    "description": "A connection id, as returned when listing connections.",
    "schema": {"type": "string", "pattern": ID_PATTERN},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "Machine-readable: invalid_request, unauthorized, "
                        "not_found, needs_reauth, revoked, pagerduty_unavailable, "
                        "configuration_error, …",
                    },
                    "message": {"type": "string"},
                },
            }
        },
    },
    "ConnectSessionRequest": {
        "type": "object",
        "required": ["owner"],
        "additionalProperties": False,
        "properties": {
            "owner": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": OWNER_PATTERN,
                "description": "Your application's id for the user (opaque to pdauth): no "
                "control characters, no space at either end.",
            },
            "return_to": {
                "type": ["string", "null"],
                "maxLength": 512,
                "description": "A same-origin relative path to land on after connecting. "
                "Anything else is replaced by the default page (see `return_to` in the "
                "response).",
            },
        },
    },
    "ConnectSession": {
        "type": "object",
        "required": ["url", "expires_at", "owner", "return_to"],
        "additionalProperties": False,
        "properties": {
            "url": {
                "type": "string",
                "description": "Send the user's browser here. Works once, for 10 minutes.",
            },
            "expires_at": {"type": "string", "format": "date-time"},
            "owner": {"type": "string"},
            "return_to": {"type": ["string", "null"]},
        },
    },
    "User": {
        "type": "object",
        "required": ["id", "name", "email"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "email": {"type": ["string", "null"]},
        },
    },
    "LastError": {
        "type": "object",
        "required": ["code", "message", "at"],
        "additionalProperties": False,
        "properties": {
            "code": {"type": "string"},
            "message": {"type": ["string", "null"]},
            "at": _TS,
        },
    },
    "Connection": {
        "type": "object",
        "description": "A connected PagerDuty account. Never contains a token.",
        "required": [
            "id",
            "owner",
            "kind",
            "status",
            "region",
            "account_id",
            "subdomain",
            "user",
            "scopes",
            "api_base_url",
            "created_at",
            "updated_at",
            "last_refreshed_at",
            "access_expires_at",
            "last_error",
        ],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "owner": {"type": "string"},
            "kind": {"type": "string", "enum": ["user", "app"]},
            "status": {"type": "string", "enum": ["active", "needs_reauth", "revoked"]},
            "region": {"type": "string", "enum": ["us", "eu"]},
            "account_id": {"type": "string"},
            "subdomain": {"type": ["string", "null"]},
            "user": {"oneOf": [_ref("User"), {"type": "null"}]},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "api_base_url": {"type": ["string", "null"]},
            "created_at": _TS,
            "updated_at": _TS,
            "last_refreshed_at": _TS,
            "access_expires_at": _TS,
            "last_error": {"oneOf": [_ref("LastError"), {"type": "null"}]},
        },
    },
    "ConnectionList": {
        "type": "object",
        "required": ["connections", "next_after"],
        "additionalProperties": False,
        "properties": {
            "connections": {"type": "array", "items": _ref("Connection")},
            "next_after": {
                "type": ["string", "null"],
                "description": "Pass as `after` to get the next page; null on the last page.",
            },
        },
    },
    "ConnectionEnvelope": {
        "type": "object",
        "required": ["connection"],
        "additionalProperties": False,
        "properties": {"connection": _ref("Connection")},
    },
    "AccessToken": {
        "type": "object",
        "required": ["connection_id", "access_token", "token_type", "expires_at", "api_base_url"],
        "additionalProperties": False,
        "properties": {
            "connection_id": {"type": "string"},
            "access_token": {
                "type": "string",
                "description": "Send as `Authorization: Bearer …` to `api_base_url` only.",
            },
            "token_type": {"type": "string", "enum": ["bearer"]},
            "expires_at": _TS,
            "api_base_url": {"type": ["string", "null"]},
        },
    },
    "Event": {
        "type": "object",
        "required": ["id", "type", "connection_id", "owner", "data", "created_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "type": {"type": "string"},
            "connection_id": {"type": ["string", "null"]},
            "owner": {"type": ["string", "null"]},
            "data": {"type": "object"},
            "created_at": _TS,
        },
    },
    "EventList": {
        "type": "object",
        "required": ["events", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "events": {"type": "array", "items": _ref("Event")},
            "next_cursor": {
                "type": "integer",
                "description": "Pass as `cursor` to continue after the last event returned.",
            },
        },
    },
}


def openapi_document(server_url: str) -> dict[str, Any]:
    """The document, with ``servers[0].url`` set to where the API is mounted."""
    get_connection = {
        "operationId": "getConnection",
        "summary": "One connection (never a secret).",
        "parameters": [_CONNECTION_ID],
        "responses": {
            "200": _json("The connection.", _ref("ConnectionEnvelope")),
            "404": _error("No such connection."),
            **_COMMON_ERRORS,
        },
    }
    delete_connection = {
        "operationId": "deleteConnection",
        "summary": "Disconnect: the tokens are deleted at once; the row stays as an audit trail.",
        "parameters": [_CONNECTION_ID],
        "responses": {
            "200": _json("The connection, now revoked.", _ref("ConnectionEnvelope")),
            "404": _error("No such connection."),
            **_COMMON_ERRORS,
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pdauth JSON API",
            "version": API_VERSION,
            "description": "Connect sessions, connections, token vending and the event log of "
            "a pdauth service. Authenticate with `Authorization: Bearer <API key>` "
            "(keys from PDAUTH_API_KEYS).",
        },
        "servers": [{"url": server_url}],
        "security": [{"apiKey": []}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "paths": {
            "/connect-sessions": {
                "post": {
                    "operationId": "createConnectSession",
                    "summary": "A one-time URL (10 minutes) that starts a connect flow for "
                    "an owner.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ConnectSessionRequest")}},
                    },
                    "responses": {
                        "201": _json("Send the user to `url`.", _ref("ConnectSession")),
                        "415": _error("The body is not application/json."),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/connections": {
                "get": {
                    "operationId": "listConnections",
                    "summary": "Connections ordered by id, optionally of one owner or status.",
                    "parameters": [
                        {
                            "name": "owner",
                            "in": "query",
                            "schema": _OWNER_PARAM,
                        },
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {
                                "type": "string",
                                "enum": ["active", "needs_reauth", "revoked"],
                            },
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "string", "pattern": _ID_PATTERN},
                        },
                    ],
                    "responses": {
                        "200": _json("A page of connections.", _ref("ConnectionList")),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/connections/{connection_id}": {
                "get": get_connection,
                "delete": delete_connection,
            },
            "/connections/{connection_id}/access-token": {
                "post": {
                    "operationId": "vendAccessToken",
                    "summary": "A valid access token for the connection (refreshed if due), "
                    "for the host's other services.",
                    "parameters": [_CONNECTION_ID],
                    "responses": {
                        "200": _json("A fresh access token and its expiry.", _ref("AccessToken")),
                        "404": _error("No such connection."),
                        "409": _error("The connection needs re-authorization or was revoked."),
                        "502": _error("PagerDuty could not be reached or refused the client."),
                        "503": _error(
                            "The database is unavailable or a token could not be "
                            "decrypted; retry later."
                        ),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/events": {
                "get": {
                    "operationId": "listEvents",
                    "summary": "The audit/event log after a cursor, oldest first.",
                    "parameters": [
                        {
                            "name": "cursor",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                        {
                            "name": "owner",
                            "in": "query",
                            "schema": _OWNER_PARAM,
                        },
                        {
                            "name": "type",
                            "in": "query",
                            "schema": {"type": "string", "pattern": EVENT_TYPE_PATTERN},
                        },
                    ],
                    "responses": {
                        "200": _json("Events after the cursor.", _ref("EventList")),
                        **_COMMON_ERRORS,
                    },
                }
            },
        },
    }
