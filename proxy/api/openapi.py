"""The OpenAPI 3 document of the admin API, served at /client/v4/openapi.json (public).

Hand-written, compactly: ``tests/proxy/api/test_openapi.py`` checks that it names exactly the
routes ``routes.py`` serves.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from aiohttp import web

from proxy.api.state import deps_of

logger = logging.getLogger(__name__)

Schema = dict[str, Any]

TIME: Schema = {"type": "string", "format": "date-time", "example": "2025-01-01T00:00:00Z"}
STATUS: Schema = {
    "type": "string",
    "enum": ["pending_deployment", "available", "pending_deletion", "inactive"],
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], *, required: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


_STR: Schema = {"type": "string"}
_BOOL: Schema = {"type": "boolean"}
_MESSAGE = _object({"code": {"type": "integer"}, "message": _STR})

SCHEMAS: dict[str, Schema] = {
    "Message": _MESSAGE,
    "Error": _object(
        {"success": {"type": "boolean", "enum": [False]}, "errors": {"type": "array", "items": _ref("Message")},
         "messages": {"type": "array", "items": _ref("Message")}, "result": {"nullable": True}},
        required=["success", "errors", "messages", "result"],
    ),
    "ResultInfo": _object({k: {"type": "integer"} for k in ("page", "per_page", "count", "total_count", "total_pages")}),
    "Account": _object(
        {"id": _STR, "name": _STR, "type": {"type": "string", "enum": ["standard"]},
         "settings": {"type": "object"}, "created_on": TIME},
        required=["id", "name", "type"],
    ),
    "GatewayCertificate": _object(
        {"id": {"type": "string", "format": "uuid"}, "type": {"type": "string", "enum": ["gateway_managed", "custom"]},
         "binding_status": STATUS, "in_use": _BOOL, "certificate": {"type": "string", "description": "CA certificate, PEM"},
         "fingerprint": {"type": "string", "description": "SHA-256, colon hex"}, "issuer_org": _STR, "issuer_raw": _STR,
         "created_at": TIME, "updated_at": TIME, "uploaded_on": TIME, "expires_on": TIME,
         "gateway_devices": {**_object({k: {"type": "integer", "minimum": 0} for k in ("installed", "missing", "reporting")}),
                             "description": "our addition, on GET of one certificate: of the devices whose agent reported "
                             "its trust stores in the last 7 days, how many have it installed (in at least one store)"}},
    ),
    "MtlsCertificate": _object(
        {"id": {"type": "string", "format": "uuid"}, "name": _STR, "ca": _BOOL,
         "certificates": {"type": "string", "description": "PEM, the CA then its chain"}, "issuer": _STR,
         "serial_number": _STR, "signature": {"type": "string", "example": "SHA256WithRSA"},
         "type": {"type": "string", "enum": ["custom"]}, "uploaded_on": TIME, "updated_at": TIME, "expires_on": TIME},
    ),
    "Settings": {
        "type": "object",
        "description": "Cloudflare's Gateway account settings. certificate.id turns that certificate on "
        "(it must be available; the nil UUID is refused: there is no Cloudflare root CA here). "
        "tls_decrypt.enabled defaults to true. Unknown top-level keys are refused.",
        "properties": {
            "certificate": _object({"id": {"type": "string", "format": "uuid"}}, required=["id"]),
            "certificate_rotation": {**_object({
                "auto_rotate_days_before_expiry": {"type": "integer", "minimum": 0, "maximum": 3650},
                "coverage": {"type": "integer", "minimum": 0, "maximum": 100},
                "grace": {"type": "string", "example": "1d"},
                "on_deadline": {"type": "string", "enum": ["hold", "proceed"]}}),
                "description": "our addition: a CA rotation starts that many days before the in-use CA expires (0: off)"},
            "tls_decrypt": _object({"enabled": _BOOL}),
            "pac_file": _object({"exclude": {
                "type": "array", "maxItems": 500, "items": _STR,
                "description": "our addition: hosts GET /proxy.pac sends around the proxy: a host name "
                "(and every name under it), a pattern (*.corp.example) or an IPv4 address or network"}}),
            **{k: {"type": "object"} for k in (
                "activity_log", "antivirus", "block_page", "body_scanning", "browser_isolation",
                "custom_certificate", "extended_email_matching", "fips", "host_selector",
                "inspection", "protocol_detection", "sandbox")},
            "max_ttl_secs": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    },
    "Configuration": _object({"settings": _ref("Settings"), "created_at": TIME, "updated_at": TIME}),
    "GatewayRule": _object(
        {"id": _STR, "name": _STR, "description": _STR, "precedence": {"type": "integer", "minimum": 0},
         "enabled": _BOOL, "action": {"type": "string", "enum": ["allow", "block", "off", "on", "redirect"]},
         "filters": {"type": "array", "items": {"type": "string", "enum": ["http"]}},
         "traffic": {"type": "string", "description": "wirefilter expression; \"\" = no condition"},
         "identity": {"type": "string", "description": "identity.* fields only"},
         "device_posture": {"type": "string", "description": "device_posture.* fields only"},
         "rule_settings": _object({"block_page_enabled": _BOOL, "block_reason": _STR,
                                   "untrusted_cert": _object({"action": {"type": "string", "enum": ["pass_through", "block", "error"]}}),
                                   "redirect": _object({"target_uri": _STR, "preserve_path_and_query": _BOOL, "include_context": _BOOL})}),
         "created_at": TIME, "updated_at": TIME,
         "read_only": {"type": "boolean", "description": "from a policy file: the API cannot change it"}},
        required=["action", "enabled", "filters", "name", "precedence", "traffic"],
    ),
    "AccessRule": {"type": "object", "description": "one of {everyone: {}}, {email: {email}}, {email_domain: {domain}}, "
                   "{ip: {ip}}, {device_posture: {integration_uid}}, {certificate: {}}, {common_name: {common_name}}",
                   "minProperties": 1, "maxProperties": 1},
    "AccessPolicy": _object(
        {"id": _STR, "name": _STR, "decision": {"type": "string", "enum": ["allow", "deny", "bypass", "non_identity"]},
         "include": {"type": "array", "items": _ref("AccessRule"), "minItems": 1},
         "require": {"type": "array", "items": _ref("AccessRule")},
         "exclude": {"type": "array", "items": _ref("AccessRule")},
         "session_duration": {"type": "string", "example": "24h"}, "reusable": _BOOL,
         "app_count": {"type": "integer"}, "created_at": TIME, "updated_at": TIME, "read_only": _BOOL},
        required=["name", "decision", "include"],
    ),
    "AccessApplication": _object(
        {"id": _STR, "type": {"type": "string", "enum": ["self_hosted"]}, "name": _STR,
         "domain": {"type": "string", "example": "intranet.example.com", "description": "a host or *.domain"},
         "policies": {"type": "array", "description": "in requests: policy ids, or {id, precedence}; in answers: "
                      "the policy objects, each with its precedence",
                      "items": {"oneOf": [_STR, _object({"id": _STR, "precedence": {"type": "integer"}}, required=["id"])]}},
         "session_duration": {"type": "string", "example": "24h"}, "created_at": TIME, "updated_at": TIME,
         "read_only": _BOOL},
        required=["type", "domain"],
    ),
    "PolicyTest": _object(
        {"request": _object({"method": {"type": "string", "default": "GET"}, "url": _STR,
                             "src_ip": {"type": "string", "default": "127.0.0.1"}, "dst_ip": _STR}, required=["url"]),
         "identity": _object({"email": _STR, "groups": {"type": "array", "items": _STR}, "certificate_cn": _STR}),
         "posture": _object({"passed": {"type": "array", "items": _STR}, "failed": {"type": "array", "items": _STR}}),
         "expect": _object({"action": {"type": "string", "enum": ["allow", "block", "off", "redirect"]},
                            "rule": _STR, "access": {"type": "string", "enum": ["allow", "deny"]}},
                           required=["action"])},
        required=["request"],
    ),
    "PolicyTestResult": _object(
        {"action": {"type": "string", "enum": ["allow", "block", "off", "on", "redirect"]},
         "rule": {"nullable": True, **_object({"id": _STR, "name": _STR, "precedence": {"type": "integer"}})},
         "stage": {"type": "string", "enum": ["connection", "request"]},
         "access": {"nullable": True, **_object({"application": _object({"id": _STR, "name": _STR, "domain": _STR}),
                                                 "policy": {"nullable": True, **_object({"id": _STR, "name": _STR, "decision": _STR})},
                                                 "allowed": _BOOL})},
         "summary": _STR, "trace": {"type": "string", "description": "every rule looked at and the clause that decided"},
         "passed": {"type": "boolean", "description": "only with expect"},
         "problems": {"type": "array", "items": _STR, "description": "only with expect"}},
        required=["action", "rule", "stage", "access", "trace"],
    ),
    "ImportResult": _object(
        {k: {"type": "integer"} for k in ("gateway_rules", "access_policies", "access_applications", "left_to_policy_files")},
    ),
    "Deleted": _object({"id": _STR}, required=["id"]),
    "Node": _object(
        {"id": _STR, "name": _STR, "started_at": TIME, "last_heartbeat": TIME, "live": _BOOL, "current": _BOOL,
         "loaded_certificates": {"type": "array", "items": _object({"id": _STR, "fingerprint": _STR, "loaded_at": TIME})}},
    ),
    "PostureRule": _object(
        {"id": _STR, "name": _STR, "description": _STR,
         "type": {"type": "string", "enum": ["client_certificate", "client_certificate_v2"]},
         "schedule": {"type": "string", "example": "5m", "description": "at least 1m"},
         "expiration": {"type": "string", "example": "10m", "description": "how long a result holds (default 10m)"},
         "match": {"type": "array", "items": _object({"platform": {"type": "string", "enum": [
             "windows", "mac", "linux", "android", "ios", "chromeos"]}}), "description": "none: every platform"},
         "input": _object(
             {"certificate_id": {"type": "string", "format": "uuid", "description": "an mTLS upload of the account"},
              "cn": {"type": "string", "example": "${hostname}.corp"}, "check_private_key": _BOOL,
              "operating_system": {"type": "string", "enum": ["linux", "windows", "mac"]},
              "extended_key_usage": {"type": "array", "items": {"type": "string", "enum": ["clientAuth", "emailProtection"]}},
              "locations": _object({"paths": {"type": "array", "items": _STR},
                                    "trust_stores": {"type": "array", "items": {"type": "string", "enum": ["system", "user"]}}}),
              "subject_alternative_names": {"type": "array", "items": _STR}},
             required=["certificate_id"]),
         "enabled": _BOOL},
        required=["name", "type", "input"],
    ),
    "PostureLogEntry": _object(
        {"id": {"type": "integer"}, "timestamp": TIME, "device_id": _STR, "device_name": _STR, "email": _STR,
         "rule_id": {"type": "string", "description": "\"\" when about the device (a refused secret)"},
         "rule_name": _STR, "outcome": {"type": "string", "enum": ["passed", "failed", "refused"]},
         "success": _BOOL, "verified": _BOOL, "reason": _STR, "certificate_fingerprint": _STR,
         "certificate_cn": {"type": "string", "nullable": True}, "expires_at": {**TIME, "nullable": True}},
    ),
    "Device": _object(
        {"id": _STR, "name": _STR, "device_type": {"type": "string", "enum": ["windows", "mac", "linux", "android", "ios", "chromeos"]},
         "ip": _STR, "last_seen": TIME, "os_version": _STR, "serial_number": _STR, "hostname": _STR,
         "user": _object({"id": {"type": "string", "description": "UUID 5 of mailto:<email>"}, "email": _STR, "name": _STR}),
         "created": TIME, "updated": TIME, "created_at": TIME, "updated_at": TIME, "last_seen_at": TIME,
         "active_registrations": {"type": "integer"}, "tags": {"type": "object"},
         "trust_stores": {"type": "array", "description": "our addition, on GET of one device: its agent's latest "
                          "trust store report", "items": _ref("DeviceTrustStore")}},
    ),
    "WireGuardConfig": _object(
        {"device_id": _STR, "address": {"type": "string", "example": "100.96.0.2/32", "description": "the device's tunnel address"},
         "port": {"type": "integer", "description": "the gateway's UDP port for this device alone"},
         "endpoint": {"type": "string", "example": "gateway.example.com:51820"},
         "public_key": {"type": "string", "description": "the gateway's end of this device's tunnel (base64)"},
         "client_public_key": _STR, "allowed_ips": {"type": "array", "items": _STR}, "dns": {"type": "array", "items": _STR},
         "format": {"type": "string", "enum": ["wg-quick", "wg"]},
         "config": {"type": "string", "description": "the configuration file, the device's private key included"}}),
    "DeviceTrustStore": _object(
        {"store": {"type": "string", "example": "nss:/home/ann/.pki/nssdb", "description": "system or nss:<absolute path>"},
         "installed": {"type": "array", "items": {"type": "string", "description": "SHA-256, colon hex"}},
         "error": _STR, "reported_at": TIME}),
    "CertificateDevice": _object(
        {"device_id": _STR, "name": _STR, "installed": {"type": "boolean", "description": "in at least one store"},
         "stores": {"type": "array", "items": _STR}, "reported_at": {**TIME, "nullable": True},
         "reporting": {"type": "boolean", "description": "reported in the last 7 days (counted in gateway_devices)"}}),
    "RootCertificate": _object(
        {"id": _STR, "fingerprint": {"type": "string", "description": "SHA-256, colon hex"},
         "certificate": {"type": "string", "description": "PEM"}, "binding_status": STATUS, "in_use": _BOOL}),
    "TrustStoresReport": _object({"stores": {"type": "array", "maxItems": 64, "items": _object(
        {"store": {"type": "string", "description": "system or nss:<absolute path>, each once"},
         "installed": {"type": "array", "maxItems": 256, "items": {"type": "string", "description": "SHA-256, colon hex"}},
         "error": {"type": "string", "maxLength": 1000, "default": ""}},
        required=["store", "installed"])}}, required=["stores"]),
    "TrustStoresStored": _object({"stores": {"type": "integer"}, "installed": {"type": "integer"}}),
    "EnrollmentTokenRequest": _object(
        {"email": {"type": "string", "description": "the user of the device it enrolls (else the device names one)"},
         "expires_in": {"type": "string", "default": "1h", "description": "1m to 30d"}}),
    "EnrollmentToken": _object(
        {"id": _STR, "token": {"type": "string", "description": "gwe1.<base64url JSON {u, a, s, f}>: shown once"},
         "email": _STR, "created_at": TIME, "expires_at": TIME}),
    "Identity": _object(
        {"email": _STR, "user_uuid": _STR, "account_id": _STR, "device_id": _STR, "ip": _STR,
         "is_gateway": _BOOL, "is_warp": _BOOL, "common_name": _STR, "device_sessions": {"type": "object"},
         "devicePosture": {"type": "object", "description": "by rule id", "additionalProperties": _object(
             {"id": _STR, "rule_name": _STR, "type": _STR, "success": _BOOL, "timestamp": TIME,
              "description": _STR, "error": _STR, "verified": _BOOL, "expires_at": TIME, "data": {"type": "object"}})}},
    ),
    "EnrollRequest": _object(
        {**{k: _STR for k in ("secret", "name", "os", "os_version", "serial_number", "hostname", "email")},
         "addresses": {"type": "array", "items": _STR, "description": "the device's IP addresses (transparent mode)"}},
        required=["secret", "os"]),
    "Enrolled": _object({"device_id": _STR, "device_secret": {"type": "string", "description": "shown once"},
                         "account_id": _STR}),
    "AgentRule": _object({"rule": _ref("PostureRule"), "signing_certificates": {"type": "string", "description": "PEM"}}),
    "Nonce": _object({"nonce": {"type": "string", "description": "base64 of 32 random bytes; single use"},
                      "expires_at": TIME}),
    "AgentResults": _object({"results": {"type": "array", "maxItems": 256, "items": _object(
        {"rule_id": _STR, "success": _BOOL, "reason": _STR, "nonce": _STR,
         "certificate": {"type": "string", "description": "PEM, with a pass"},
         "signature": {"type": "string", "description": "base64 proof over the nonce, device id and rule id"}},
        required=["rule_id", "success"])}}, required=["results"]),
    "GatewayListItem": _object({"value": _STR, "description": _STR, "created_at": TIME}, required=["value"]),
    "GatewayList": _object(
        {"id": {"type": "string", "format": "uuid"}, "name": _STR, "description": _STR,
         "type": {"type": "string", "enum": ["DOMAIN", "HOST", "URL", "IP", "EMAIL", "SERIAL"]},
         "count": {"type": "integer"}, "items": {"type": "array", "items": _ref("GatewayListItem")},
         "created_at": TIME, "updated_at": TIME, "read_only": _BOOL},
        required=["name", "type"],
    ),
    "GatewayListEdit": _object({"append": {"type": "array", "items": _ref("GatewayListItem")},
                                "remove": {"type": "array", "items": _STR}}),
    "RequestLogLine": {**_object(
        {"time": TIME, "node": _STR, "mode": _STR, "device": {"type": "string", "nullable": True},
         "user": {"type": "string", "nullable": True}, "src_ip": {"type": "string", "nullable": True},
         "method": _STR, "scheme": _STR, "host": _STR, "path": _STR, "action": _STR, "stage": _STR,
         "rule_id": {"type": "string", "nullable": True}, "status": {"type": "integer", "nullable": True},
         "bytes": {"type": "integer"}, "ca_fingerprint": {"type": "string", "nullable": True},
         "rule": {"type": "string", "nullable": True}, "reason": _STR, "error": _STR, "access_policy": _STR,
         "posture": {"type": "array", "items": _object(
             {"id": _STR, "name": _STR, "state": {"type": "string", "enum": ["passed", "failed", "expired", "no result"]},
              "reason": _STR})}}),
        "description": "one line of requests.jsonl as the proxy wrote it (more keys may appear)"},
    "StoredResult": _object({"rule_id": _STR, "success": _BOOL, "verified": _BOOL, "reason": _STR,
                             "expires_at": TIME}),
    "Rotation": _object(
        {"id": {"type": "string", "format": "uuid"},
         "state": {"type": "string", "enum": ["running", "paused", "held", "completed", "cancelled", "failed"]},
         "step": {"type": "string", "enum": ["deploy", "install", "grace", "retire", "done"]},
         "trigger": {"type": "string", "enum": ["manual", "auto"]},
         "new_certificate_id": _STR, "old_certificate_id": {"type": "string", "nullable": True},
         "coverage": _object({"required_percent": {"type": "integer", "minimum": 0, "maximum": 100},
                              "installed": {"type": "integer"}, "reporting": {"type": "integer"}, "met": _BOOL,
                              "missing": {"type": "array", "items": _object({"device_id": _STR, "name": _STR})}}),
         "deadline": TIME, "grace": {"type": "string", "example": "1d"},
         "on_deadline": {"type": "string", "enum": ["hold", "proceed"]}, "message": _STR,
         "created_at": TIME, "updated_at": TIME, "switched_at": {**TIME, "nullable": True},
         "finished_at": {**TIME, "nullable": True},
         "steps": {"type": "array", "items": _object({"at": TIME, "step": _STR, "state": _STR, "message": _STR})}},
    ),
    "RotationRequest": _object(
        {"coverage": {"type": "integer", "minimum": 0, "maximum": 100, "default": 100,
                      "description": "percent of the devices reporting their trust stores that must have the new CA"},
         "deadline": {"type": "string", "default": "7d", "description": "a duration from now (30s, 10m, 12h, 7d) or an RFC 3339 time"},
         "grace": {"type": "string", "default": "1d", "description": "how long the old CA stays available after the switch"},
         "on_deadline": {"type": "string", "enum": ["hold", "proceed"], "default": "hold"},
         "upload_id": {"type": "string", "format": "uuid", "description": "an inactive mTLS upload with its key, instead of a new CA"},
         "validity_period_days": {"type": "integer", "minimum": 1, "maximum": 10950, "default": 1825},
         "key_type": {"type": "string", "enum": ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"], "default": "ec-p256"}}),
}  # fmt: skip


def _envelope(result: Schema, *, paged: bool = False) -> Schema:
    props: dict[str, Schema] = {
        "success": {"type": "boolean", "enum": [True]},
        "errors": {"type": "array", "items": _ref("Message")},
        "messages": {
            "type": "array",
            "items": _ref("Message"),
            "description": "warnings (certificate expiry; 10100: devices lack the certificate turned on)",
        },
        "result": {"type": "array", "items": result} if paged else result,
    }
    if paged:
        props["result_info"] = _ref("ResultInfo")
    return _object(props, required=["success", "errors", "messages", "result"])


_ERRORS = {
    "400": "invalid input or refused transition (the message names the field or the rule)",
    "401": "missing or invalid bearer token",
    "403": "the token may not act on this account",
    "404": "unknown account, object or route",
    "405": "method not allowed",
    "413": "body larger than 1 MiB",
}


def _json(schema: Schema) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(summary: str, result: Schema | None, *, paged: bool = False, body: Schema | None = None,
        extra: dict[str, Any] | None = None, query: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    responses: dict[str, Any] = {}
    if result is not None:
        responses["200"] = {"description": "success", **_json(_envelope(result, paged=paged))}
    responses.update(extra or {})
    responses.update({code: {"description": text, **_json(_ref("Error"))} for code, text in _ERRORS.items()})
    op: dict[str, Any] = {"summary": summary, "responses": responses, "security": [{"bearer": []}]}
    if body is not None:
        op["requestBody"] = {"required": False, **_json(body)}
    if query:
        op["parameters"] = query
    return op


def _public(op: dict[str, Any]) -> dict[str, Any]:
    op = copy.deepcopy(op)
    op["security"] = []
    for code in ("401", "403", "413"):
        op["responses"].pop(code, None)
    return op


def _file(summary: str, media: str) -> dict[str, Any]:
    return _public(_op(summary, None, extra={"200": {"description": "the file", "content": {media: {}}}}))


def _q(name: str, schema: Schema, description: str, *, explode: bool = False) -> dict[str, Any]:
    param: dict[str, Any] = {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }
    if explode:
        param.update(style="form", explode=True)
    return param


_PAGING = [
    _q("page", {"type": "integer", "minimum": 1}, "page number, from 1"),
    _q("per_page", {"type": "integer", "minimum": 1}, "items per page"),
]
_CERT = _ref("GatewayCertificate")
_MTLS = _ref("MtlsCertificate")
_CREATE_CERT = _object(
    {
        "validity_period_days": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10950,
            "default": 1825,
        },
        "key_type": {
            "type": "string",
            "enum": ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"],
            "default": "ec-p256",
            "description": "our addition",
        },
    }
)
_CREATE_MTLS = _object(
    {
        "name": _STR,
        "certificates": {"type": "string", "description": "PEM: the CA, then its issuers"},
        "private_key": {
            "type": "string",
            "description": "PEM; with it the id can be activated as a custom gateway certificate",
        },
        "ca": {"type": "boolean", "enum": [True]},
    },
    required=["certificates", "ca"],
)
_SETTINGS_BODY = _object({"settings": _ref("Settings")}, required=["settings"])
_RATE = {
    "429": {
        "description": "4th generation within 24 hours (Retry-After, x-should-retry: false)",
        **_json(_ref("Error")),
    }
}
A = "/client/v4/accounts/{account_id}"
CERT = A + "/gateway/certificates/{certificate_id}"
ROTATIONS = A + "/gateway/certificates/rotations"
_ROTATION = _ref("Rotation")
_CONFLICT = {"409": {"description": "another rotation is open, or this one changed meanwhile (x-should-retry: false)",
                     **_json(_ref("Error"))}}  # fmt: skip
_RULE = _ref("GatewayRule")
_POLICY = _ref("AccessPolicy")
_APP = _ref("AccessApplication")
_DELETED = _ref("Deleted")
_CREATE_ACCOUNT = _object({"name": {"type": "string", "minLength": 1, "maxLength": 100}}, required=["name"])
_CONFLICT = {
    "409": {
        "description": "a name another account has; an account that still has devices",
        **_json(_ref("Error")),
    }
}
_APP_FILTERS = [
    _q(name, {"type": "string"}, text)
    for name, text in (
        ("name", "part of the name (all of it with exact=true)"),
        ("domain", "part of the domain (all of it with exact=true)"),
        ("search", "part of the name or the domain"),
        ("exact", "true: name and domain must match whole"),
    )
]


_POSTURE = _ref("PostureRule")
_LOG_FILTERS = [
    _q("device_id", _STR, "one device's entries"),
    _q("rule_id", _STR, "one rule's entries"),
    _q("since", _STR, "RFC 3339 time, or a duration such as 10m (that long ago)"),
]


_REQUEST_FILTERS = [
    _q("device", _STR, "one device's requests (its id)"),
    _q("action", _STR, "allow, block, redirect, ... (repeated or commas)", explode=True),
    _q("host", _STR, "part of the host name, any case"),
    _q("since", _STR, "RFC 3339 time, or a duration such as 10m (that long ago)"),
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most this many lines (default 100)"),
]


_DEVICE_ADDRESS: Schema = _object(
    {"network": {"type": "string", "description": "CIDR, e.g. 10.0.0.5/32"},
     "source": {"type": "string", "enum": ["agent", "admin"]}, "first_seen": TIME, "last_seen": TIME})  # fmt: skip


_WIREGUARD_QUERY = [
    _q("format", {"type": "string", "enum": ["wg-quick", "wg"], "default": "wg-quick"},
       "wg-quick (with Address, DNS) or wg (wg setconf: without them)"),
    _q("allowed_ips", _STR, "comma-separated CIDRs sent through the tunnel (default 0.0.0.0/0)"),
    _q("dns", _STR, "comma-separated DNS servers (wg-quick; default none)"),
]  # fmt: skip


def _agent(op: dict[str, Any], *, auth: bool = True) -> dict[str, Any]:
    """Agent paths take device credentials (Basic device_id:secret), not the admin token."""
    op = copy.deepcopy(op)
    op["security"] = [{"device": []}] if auth else []
    op["responses"].pop("403", None)
    op["responses"]["401"]["description"] = (
        "unknown enrollment secret" if not auth else "unknown device or wrong device secret"
    )
    return op


def _text_body(op: dict[str, Any]) -> dict[str, Any]:
    """A body that is a policy file's text (YAML; JSON is YAML too), not a JSON object."""
    text = {
        "schema": {
            "type": "string",
            "description": "gateway_rules, access_policies, access_applications",
        }
    }
    op["requestBody"] = {
        "required": True,
        "content": {"application/yaml": text, "application/json": text},
    }
    return op


_YAML = {"200": {"description": "a policy file", "content": {"application/yaml": {}}}}

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": _public(_op("health", None, extra={"200": {"description": '{"status": "ok"}'}}))},
    "/metrics": {"get": _public(_op("counters in Prometheus' text format (404 when none are kept)", None, extra={
        "200": {"description": "exposition format", "content": {"text/plain": {}}}}))},
    "/pki/ca.pem": {"get": _file("the in-use CA certificate, PEM", "application/x-pem-file")},
    "/pki/ca.crt": {"get": _file("the in-use CA certificate, DER", "application/pkix-cert")},
    "/pki/{certificate_id}.crt": {"get": _file("a CA certificate, DER (AIA caIssuers of leaves)", "application/pkix-cert")},
    "/pki/{certificate_id}.crl": {"get": _file("a current, signed, empty CRL of that CA", "application/pkix-crl")},
    "/proxy.pac": {"get": _file("proxy auto-config: the explicit proxy for everything but loopback, private "
                                "ranges, the admin host and settings.pac_file.exclude; the query is ignored",
                                "application/x-ns-proxy-autoconfig")},
    "/client/v4/openapi.json": {"get": _public(_op("this document", None, extra={"200": {"description": "OpenAPI 3"}}))},
    "/client/v4/accounts": {
        "get": _op("accounts this token may use", _ref("Account"), paged=True, query=_PAGING),
        "post": _op("make an account with its own CA in use (a token for every account only)", _ref("Account"),
                    body=_CREATE_ACCOUNT, extra=_CONFLICT),
    },
    A: {"get": _op("one account", _ref("Account")),
        "delete": _op("delete an account without devices, not the default one (a token for every account only)",
                      _DELETED, extra=_CONFLICT)},
    A + "/gateway/certificates": {
        "get": _op("gateway certificates", _CERT, paged=True, query=_PAGING),
        "post": _op("generate a CA (inactive); at most 3 per 24 hours", _CERT, body=_CREATE_CERT, extra=_RATE),
    },
    ROTATIONS: {
        "get": _op("our addition: CA rotations, newest first", _ROTATION, paged=True, query=_PAGING),
        "post": _op("our addition: start a CA rotation (generate or take an upload, activate, wait for devices, "
                    "turn on, grace, deactivate the old one)", _ROTATION, body=_ref("RotationRequest"),
                    extra={**_RATE, **_CONFLICT}),
    },
    ROTATIONS + "/current": {"get": _op("our addition: the open rotation, else the latest", _ROTATION)},
    ROTATIONS + "/{rotation_id}": {"get": _op("our addition: one rotation with its steps", _ROTATION)},
    ROTATIONS + "/{rotation_id}/pause": {"post": _op("our addition: pause a running rotation", _ROTATION, extra=_CONFLICT)},
    ROTATIONS + "/{rotation_id}/resume": {"post": _op(
        "our addition: resume a paused or held rotation (a held one needs a new deadline)", _ROTATION,
        body=_object({"deadline": {"type": "string", "description": "a duration from now or an RFC 3339 time"}}),
        extra=_CONFLICT)},
    ROTATIONS + "/{rotation_id}/continue": {"post": _op(
        "our addition: go on past the deadline whatever the coverage", _ROTATION, extra=_CONFLICT)},
    ROTATIONS + "/{rotation_id}/cancel": {"post": _op(
        "our addition: cancel before the switch (the new CA is deactivated); refused after it", _ROTATION,
        extra=_CONFLICT)},
    CERT: {"get": _op("one gateway certificate", _CERT),
           "delete": _op("delete an inactive certificate (a custom one only leaves Gateway)", _CERT)},
    CERT + "/activate": {"post": _op("inactive -> pending_deployment -> available (at most 10)", _CERT)},
    CERT + "/deactivate": {"post": _op("available -> pending_deletion -> inactive (not the in-use one)", _CERT)},
    CERT + "/download": {"get": _op("our addition: the CA certificate as a file", None, query=[
        _q("format", {"type": "string", "enum": ["pem", "der"], "default": "pem"}, "PEM or DER")],
        extra={"200": {"description": "the file", "content": {
            "application/x-pem-file": {}, "application/pkix-cert": {}}}})},
    CERT + "/devices": {"get": _op("our addition: every device, and whether its agent reported the certificate installed",
                                   _ref("CertificateDevice"), paged=True, query=_PAGING)},
    A + "/gateway/configuration": {
        "get": _op("Gateway settings", _ref("Configuration")),
        "put": _op("replace the settings (turning on a certificate reporting devices lack: warning 10100)",
                   _ref("Configuration"), body=_SETTINGS_BODY),
        "patch": _op("merge settings per top-level key (turning on a certificate reporting devices lack: warning 10100)",
                     _ref("Configuration"), body=_SETTINGS_BODY),
    },
    A + "/gateway/nodes": {"get": _op("our addition: proxy nodes and their loaded CAs", _ref("Node"), paged=True, query=_PAGING)},
    A + "/mtls_certificates": {
        "get": _op("uploaded CA certificates", _MTLS, paged=True, query=[*_PAGING, _q(
            "type", {"type": "array", "items": {"type": "string", "enum": ["custom", "gateway_managed", "access_managed"]}},
            "repeat the key or separate with commas", explode=True)]),
        "post": _op("upload a CA certificate (optionally with its private key)", _MTLS, body=_CREATE_MTLS),
    },
    A + "/gateway/rules": {
        "get": _op("Gateway rules by precedence (one page; filters are ignored)", _RULE, paged=True, query=_PAGING),
        "post": _op("create a rule (precedence optional: after every other one)", _RULE, body=_RULE),
    },
    A + "/gateway/rules/{rule_id}": {
        "get": _op("one rule", _RULE),
        "put": _op("replace a rule (name and action required; a missing precedence is kept)", _RULE, body=_RULE),
        "delete": _op("delete a rule", _DELETED),
    },
    A + "/gateway/rules/export": {"get": _op("our addition: every rule, policy and application as a policy file", None, extra=_YAML)},
    A + "/gateway/rules/import": {"post": _text_body(_op(
        "our addition: a policy file (YAML or JSON) replaces everything saved through the API, atomically",
        _ref("ImportResult")))},
    A + "/gateway/lists": {
        "get": _op("Gateway lists, without their items (one page)", _ref("GatewayList"), paged=True),
        "post": _op("create a list (name, type, description, items)", _ref("GatewayList"), body=_ref("GatewayList")),
    },
    A + "/gateway/lists/{list_id}": {
        "get": _op("one list with its items", _ref("GatewayList")),
        "put": _op("replace a list's name, description and items (its type stays)", _ref("GatewayList"), body=_ref("GatewayList")),
        "patch": _op("append and remove items", _ref("GatewayList"), body=_ref("GatewayListEdit")),
        "delete": _op("delete a list no rule uses", _DELETED),
    },
    A + "/gateway/lists/{list_id}/items": {
        "get": _op("a list's items, paged (default 50, at most 1000 per page)", _ref("GatewayListItem"), paged=True, query=_PAGING),
    },
    A + "/gateway/policy_test": {"post": _op("our addition: dry run of one request (decision and trace)", _ref("PolicyTestResult"), body=_ref("PolicyTest"))},
    A + "/access/policies": {
        "get": _op("reusable Access policies, paged (default 25, at most 1000 per page)", _POLICY, paged=True, query=_PAGING),
        "post": _op("create an Access policy", _POLICY, body=_POLICY),
    },
    A + "/access/policies/{policy_id}": {
        "get": _op("one Access policy", _POLICY),
        "put": _op("replace an Access policy", _POLICY, body=_POLICY),
        "delete": _op("delete an Access policy no application uses", _DELETED),
    },
    A + "/access/apps": {
        "get": _op("self-hosted Access applications, paged (default 25, at most 1000 per page)", _APP, paged=True,
                   query=[*_PAGING, *_APP_FILTERS]),
        "post": _op("create a self-hosted Access application", _APP, body=_APP),
    },
    A + "/access/apps/{app_id}": {
        "get": _op("one Access application", _APP),
        "put": _op("replace an Access application", _APP, body=_APP),
        "delete": _op("delete an Access application", _DELETED),
    },
    A + "/mtls_certificates/{certificate_id}": {
        "get": _op("one uploaded CA certificate", _MTLS),
        "delete": _op("delete an upload (refused while activated for Gateway)", _MTLS),
    },
    A + "/devices": {"get": _op("enrolled devices (one page)", _ref("Device"), paged=True, query=_PAGING)},
    A + "/devices/{device_id}": {
        "get": _op("one device", _ref("Device")),
        "delete": _op("our addition: forget a device (its secret stops working at once)", _DELETED),
    },
    A + "/devices/{device_id}/addresses": {
        "get": _op("our addition: the device's addresses (transparent mode): registered by its agent, bound by an admin",
                   {"type": "array", "items": _DEVICE_ADDRESS}),
        "put": _op("our addition: bind an address or CIDR network to the device", _DEVICE_ADDRESS,
                   body=_object({"network": {"type": "string", "example": "10.0.0.0/24"}}, required=["network"])),
        "delete": _op("our addition: unbind a network (?network=CIDR, or the same JSON body as put)",
                      _object({"network": _STR}), query=[{"name": "network", "in": "query", "schema": _STR}]),
    },
    A + "/devices/{device_id}/wireguard": {"get": _op(
        "our addition: the device's WireGuard configuration, private key included (400, code 1004, when device tunnels are off)",
        _ref("WireGuardConfig"), query=_WIREGUARD_QUERY)},
    A + "/devices/posture": {
        "get": _op("device posture rules (one page)", _POSTURE, paged=True, query=_PAGING),
        "post": _op("create a client_certificate(_v2) rule; input.certificate_id must be an mTLS upload", _POSTURE, body=_POSTURE),
    },
    A + "/devices/posture/{rule_id}": {
        "get": _op("one posture rule", _POSTURE),
        "put": _op("replace a rule (results verified against other requirements are dropped)", _POSTURE, body=_POSTURE),
        "delete": _op("delete a rule and its results", _DELETED),
    },
    A + "/gateway/requests": {"get": _op(
        "our addition: the proxy's request log (requests.jsonl), newest first, from its newest 4 MiB",
        _ref("RequestLogLine"), paged=True, query=_REQUEST_FILTERS)},
    A + "/devices/posture/logs": {"get": _op("our addition: posture log, newest first (default 100 per page)", _ref("PostureLogEntry"),
                                             paged=True, query=[*_PAGING, *_LOG_FILTERS])},
    A + "/devices/enrollment_tokens": {"post": _op("our addition: a single-use enrollment token (1 hour by default)",
                                                   _ref("EnrollmentToken"), body=_ref("EnrollmentTokenRequest"))},
    A + "/access/users/{user_id}/last_seen_identity": {"get": _op(
        "the user's most recently seen device with devicePosture (user id: UUID 5 of mailto:<email>)", _ref("Identity"))},
    "/client/v4/agent/enroll": {"post": _agent(_op("our addition: enroll with an enrollment token's secret (no auth)",
                                                    _ref("Enrolled"), body=_ref("EnrollRequest")), auth=False)},
    "/client/v4/agent/posture_rules": {"get": _agent(_op("our addition: the device's rules with their signing certificates",
                                                          {"type": "array", "items": _ref("AgentRule")}))},
    "/client/v4/agent/nonce": {"post": _agent(_op("our addition: a fresh nonce for this device (single use, 2 minutes)", _ref("Nonce")))},
    "/client/v4/agent/results": {"post": _agent(_op("our addition: results; every pass is verified by the server",
                                                    {"type": "array", "items": _ref("StoredResult")}, body=_ref("AgentResults")))},
    "/client/v4/agent/addresses": {"put": _agent(_op(
        "our addition: the device's addresses now (with each report; transparent mode identifies the device by them)",
        _object({"addresses": {"type": "array", "items": _STR}}), body=_object({"addresses": {"type": "array", "items": _STR}},
                                                                                  required=["addresses"])))},
    "/client/v4/agent/root_certificates": {"get": _agent(_op(
        "our addition: the root CAs to trust (available and pending_deployment)", {"type": "array", "items": _ref("RootCertificate")}))},
    "/client/v4/agent/wireguard": {"get": _agent(_op(
        "our addition: this device's WireGuard configuration, its private key included", _ref("WireGuardConfig"),
        query=_WIREGUARD_QUERY))},
    "/client/v4/agent/trust_stores": {"post": _agent(_op(
        "our addition: what each trust store holds (a full report: replaces the last one)", _ref("TrustStoresStored"),
        body=_ref("TrustStoresReport")))},
}  # fmt: skip


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.replace(".", "/").split("/") if part.startswith("{")]
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]


def build(server_url: str) -> dict[str, Any]:
    paths = {path: {"parameters": _path_parameters(path), **ops} if "{" in path else ops
             for path, ops in PATHS.items()}  # fmt: skip
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Gateway admin API",
            "version": "1",
            "description": "Cloudflare API v4 shapes (envelope, paths, objects) for a self-hosted "
            "Zero Trust gateway. Errors carry a 4xx status; see docs/api.md for codes.",
        },
        "servers": [{"url": server_url}],
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "device": {"type": "http", "scheme": "basic", "description": "device_id:secret"},
            },
        },
        "paths": paths,
    }


async def document(request: web.Request) -> web.Response:
    return web.json_response(build(deps_of(request).public_base_url))
