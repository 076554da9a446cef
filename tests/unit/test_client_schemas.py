"""The client's typed models against the service's OpenAPI document.

``client/unlearn_client/models.py`` is written by hand (the client imports nothing of the
service, so that it installs on its own); these tests are what keeps it the service's copy. A
field renamed, added or removed, a type changed or an enum value added in ``service/*/schemas.py``
fails here, and so does a client method whose body the service would refuse or whose return type
is not what its route answers.

The document is the app factory's (``app.openapi()``: no database, no lifespan). The rules:

- **Counterparts.** Every ``TypedDict`` of ``models.py`` is the component of the same name, or the
  one :data:`COUNTERPARTS` names; one with neither fails.
- **Fields.** The same names as the component's properties.
- **Required.** A type the client sends (reachable only from request bodies): a field is
  ``NotRequired`` exactly when the component does not require it. A type the client reads: the
  service sends every property of its response models (no route excludes unset, default or
  ``None`` values: checked below), so every field is required, except the
  :data:`OLDER_SERVICES_OMIT` ones (added later with a default; the client still reads services
  from before) and the fields only a detail answer has (:data:`BRIEF_COUNTERPARTS`).
- **Types.** Both sides become one shape: ``string`` (any format) is ``str``, ``integer``
  ``int``, ``number`` ``float``, ``boolean`` ``bool``, ``null`` ``None``, ``array`` ``list[X]``,
  an object without properties ``dict[str, X]``, ``$ref`` the counterpart ``TypedDict``,
  ``enum`` (also a ``$ref`` to an enum component) a ``Literal`` of the same values, ``anyOf`` a
  union; the shapes must be equal, but for three stated leeways: a request field the service
  does not require may leave ``None`` out (the client omits the key instead of sending null),
  :data:`CLIENT_CONVERTS` (what the client encodes before sending) and :data:`NARROWED` (a
  service ``str`` the client types as a ``Literal`` of the service's own enum, compared value
  for value).
- **Calls.** Every public method of ``UnlearnClient`` is called once here (or is made of such
  calls): its route exists, the body it sends is one the route's schema takes, its query
  parameters are the route's, and its return type is the route's answer.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any, Literal, NotRequired, Union, get_args, get_origin, is_typeddict

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from service.app import create_app
from service.db.models import DeletionStatus, ModelStatus
from service.generation.schemas import GeneratedPiece
from service.settings import Settings
from unlearn_client import UnlearnClient, models

#: Client type -> component, where the names differ.
COUNTERPARTS: dict[str, str] = {
    "ApiKey": "KeyPublic",
    "AuditEntry": "AuditEntryOut",
    "BaseModel": "BaseModelPublic",
    "Certificate": "DeletionCertificate",
    "CertifiedAudit": "ExactnessAuditLink",
    "Deletion": "DeletionPublic",
    "Delivery": "DeliveryDetail",
    "DeliveryAttempt": "AttemptPublic",
    "ExactnessAudit": "ExactnessAuditPublic",
    "FullAuditVerification": "FullVerification",
    "IssuedKey": "IssuedKeyPublic",
    "Job": "JobPublic",
    "Model": "ModelPublic",
    "ModelStatus": "ModelStatusPublic",
    "PassGrade": "PassGradePublic",
    "Prediction": "PredictionOut",
    "ShardAnswer": "ShardStatusBrief",
    "Webhook": "WebhookPublic",
    "WebhookWithSecret": "WebhookSecretPublic",
}
#: A client type that also stands for a brief answer: the brief's fields are the detail's, and
#: those only the detail has are ``NotRequired`` in the client.
BRIEF_COUNTERPARTS: dict[str, str] = {"Delivery": "DeliveryPublic"}
#: Schemas the service sends outside the OpenAPI document: a streamed generation's ``token``
#: events (server-sent events, which the document does not describe).
OUTSIDE_THE_DOCUMENT: tuple[type[Any], ...] = (GeneratedPiece,)
#: Response fields added after the client first read their type, with a default: the client
#: keeps them ``NotRequired`` so that it still reads a service from before them.
OLDER_SERVICES_OMIT: frozenset[tuple[str, str]] = frozenset(
    {
        ("AuditPage", "next_cursor"),
        ("AuditVerification", "full_verification"),
        ("AuditVerification", "verified_at"),
        ("AuditVerification", "verified_through_seq"),
        ("Certificate", "audit_verification"),
        ("ModelStatus", "audit"),
        ("ModelStatus", "measured_quality"),
        ("Model", "grade_approximations"),
        ("SamplesResult", "eval_samples"),
    }
)
#: Request fields the client takes in another form and encodes before sending.
CLIENT_CONVERTS: dict[tuple[str, str], str] = {("SampleIn", "image"): "bytes"}
#: Service ``str`` fields the client types as a ``Literal``: the service's enum of their values.
NARROWED: dict[tuple[str, str], type[StrEnum]] = {
    ("Certificate", "status"): DeletionStatus,
    ("Deletion", "status"): DeletionStatus,
    ("Model", "status"): ModelStatus,
    ("ModelStatus", "status"): ModelStatus,
}

# --- shapes -----------------------------------------------------------------------------------

#: ``"str"``, ``"int"``, ``"float"``, ``"bool"``, ``"None"``, ``"any"``, ``"bytes"``;
#: ``("list", item)``, ``("dict", value)``, ``("ref", component)``, ``("enum", values)``,
#: ``("union", members)``.
Shape = str | tuple[Any, ...]
JSON_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
PY_TYPES: dict[Any, Shape] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    bytes: "bytes",
    type(None): "None",
    Any: "any",
}


def union(parts: list[Shape]) -> Shape:
    flat: set[Shape] = set()
    for part in parts:
        flat |= members(part)
    return next(iter(flat)) if len(flat) == 1 else ("union", frozenset(flat))


def members(shape: Shape) -> set[Shape]:
    return set(shape[1]) if isinstance(shape, tuple) and shape[0] == "union" else {shape}


def json_shape(schema: dict[str, Any], components: dict[str, Any]) -> Shape:
    """The shape of ``schema``; a ``$ref`` to an object is a reference, one to an enum is read
    in place (the client has no type of that name: a ``Literal`` stands for it)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if "enum" in components[name]:
            return json_shape(components[name], components)
        return ("ref", name)
    if "anyOf" in schema:
        return union([json_shape(s, components) for s in schema["anyOf"]])
    if "enum" in schema or "const" in schema:
        return ("enum", frozenset(schema.get("enum", [schema.get("const")])))
    kind = schema.get("type")
    if kind is None:
        return "any"
    if kind == "null":
        return "None"
    if kind == "array":
        return ("list", json_shape(schema.get("items", {}), components))
    if kind == "object":
        assert "properties" not in schema, f"an inline object has no client type: {schema}"
        extra = schema.get("additionalProperties", True)
        return ("dict", json_shape(extra, components) if isinstance(extra, dict) else "any")
    return JSON_TYPES[kind]


def py_shape(annotation: Any) -> Shape:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is NotRequired:
        return py_shape(args[0])
    if annotation in PY_TYPES:
        return PY_TYPES[annotation]
    if origin is Literal:
        return ("enum", frozenset(args))
    if origin in (Union, types.UnionType):
        return union([py_shape(a) for a in args])
    if origin is list:
        return ("list", py_shape(args[0]))
    if origin is dict:
        assert args[0] is str, f"a JSON object's keys are strings, not {args[0]}"
        return ("dict", py_shape(args[1]))
    if is_typeddict(annotation):
        return ("ref", counterpart(annotation.__name__))
    raise AssertionError(f"no JSON shape for {annotation!r}")


def show(shape: Shape) -> str:
    """A shape as the client would write it."""
    if isinstance(shape, str):
        return shape
    kind, inner = shape
    if kind == "union":
        return " | ".join(sorted(show(m) for m in inner))
    if kind == "enum":
        return f"Literal[{', '.join(repr(v) for v in sorted(inner, key=str))}]"
    if kind == "dict":
        return f"dict[str, {show(inner)}]"
    return f"list[{show(inner)}]" if kind == "list" else str(inner)


def counterpart(client_type: str) -> str:
    return COUNTERPARTS.get(client_type, client_type)


# --- the document -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    """The service's OpenAPI document, with the schemas it sends outside it."""
    doc = copy.deepcopy(app.openapi())  # the app keeps its own, which this adds to
    schemas = doc["components"]["schemas"]
    for model in OUTSIDE_THE_DOCUMENT:
        extra = model.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization"
        )
        for name, nested in extra.pop("$defs", {}).items():
            assert schemas[name] == nested, f"{model.__name__}'s {name} is not the document's"
        assert model.__name__ not in schemas, f"{model.__name__} is in the document now"
        schemas[model.__name__] = extra
    return doc


def test_the_service_sends_every_property(app: FastAPI, document: dict[str, Any]) -> None:
    """What the rule for responses stands on: no route leaves a field out of its answers. The
    routes as the document reads them (an included router's are not in `app.routes` itself)."""
    checked = 0
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema:
            excluded = (
                route.response_model_exclude_unset,
                route.response_model_exclude_defaults,
                route.response_model_exclude_none,
            )
            assert not any(excluded), f"{route.path} leaves fields out of its answers"
            checked += len(route.methods or ())
    assert checked == sum(len(ops) for ops in document["paths"].values()), "routes unchecked"


def reachable(doc: dict[str, Any], roots: Iterator[dict[str, Any]]) -> set[str]:
    """The components ``roots`` name, and those they name, and so on."""
    found: set[str] = set()
    todo = [json.dumps(root) for root in roots]
    while todo:
        for name in re.findall(r'"#/components/schemas/([^"]+)"', todo.pop()):
            if name not in found:
                found.add(name)
                todo.append(json.dumps(doc["components"]["schemas"][name]))
    return found


def request_components(doc: dict[str, Any]) -> set[str]:
    """Components only request bodies reach: the types the client sends."""
    operations = [op for path in doc["paths"].values() for op in path.values()]
    sent = reachable(doc, (op["requestBody"] for op in operations if "requestBody" in op))
    read = reachable(doc, (r for op in operations for r in op["responses"].values()))
    read |= reachable(doc, ({"$ref": f"#/components/schemas/{m.__name__}"}
                            for m in OUTSIDE_THE_DOCUMENT))  # fmt: skip
    return sent - read


def client_types() -> dict[str, type[Any]]:
    return {
        name: value
        for name, value in vars(models).items()
        if is_typeddict(value) and value.__module__ == models.__name__
    }


def test_every_client_type_has_a_counterpart(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    missing = {n: counterpart(n) for n in client_types() if counterpart(n) not in schemas}
    assert not missing, f"client types with no component in the OpenAPI document: {missing}"
    stale = set(COUNTERPARTS) - set(client_types())
    assert not stale, f"COUNTERPARTS names types the client no longer has: {stale}"


def field_problems(doc: dict[str, Any], name: str, client_type: type[Any]) -> list[str]:
    """What differs between one client type and its component (nothing: an empty list)."""
    schemas = doc["components"]["schemas"]
    component = schemas[counterpart(name)]
    request = counterpart(name) in request_components(doc)
    hints = typing.get_type_hints(client_type, include_extras=True)
    props: dict[str, Any] = component["properties"]
    required = set(component.get("required", []))
    problems = []
    if set(hints) != set(props):
        problems.append(
            f"{name}'s fields: client only {sorted(set(hints) - set(props))}, "
            f"service only {sorted(set(props) - set(hints))}"
        )
    brief = schemas.get(BRIEF_COUNTERPARTS.get(name, ""), component)
    for field in sorted(set(hints) & set(props)):
        where = f"{name}.{field}"
        optional = get_origin(hints[field]) is NotRequired
        if request:
            expect_optional = field not in required
        else:
            expect_optional = (name, field) in OLDER_SERVICES_OMIT or field not in brief.get(
                "properties", {}
            )
        if optional != expect_optional:
            problems.append(f"{where}: NotRequired is {optional}, should be {expect_optional}")
        ours, theirs = py_shape(hints[field]), json_shape(props[field], schemas)
        if request and field not in required and "None" not in members(ours):
            theirs = union(list(members(theirs) - {"None"}))  # the client omits the key instead
        if (name, field) in CLIENT_CONVERTS:
            ours = union(list(members(ours) - {CLIENT_CONVERTS[name, field]}))
        if (name, field) in NARROWED:
            if theirs != "str":
                problems.append(f"{where}: the service's is {show(theirs)}, not a str to narrow")
            theirs = ("enum", frozenset(e.value for e in NARROWED[name, field]))
        if ours != theirs:
            problems.append(f"{where}: the client's is {show(ours)}, the service's {show(theirs)}")
    return problems


def test_every_client_type_is_its_components_copy(document: dict[str, Any]) -> None:
    problems = [p for n, t in client_types().items() for p in field_problems(document, n, t)]
    assert not problems, "the client's models differ from the service's:\n" + "\n".join(problems)


def test_a_brief_answer_is_the_detail_less_its_extra_fields(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name, brief in BRIEF_COUNTERPARTS.items():
        detail = schemas[counterpart(name)]["properties"]
        for field, schema in schemas[brief]["properties"].items():
            assert detail.get(field) == schema, f"{brief}.{field} is not {counterpart(name)}'s"


def test_the_exceptions_name_real_fields(document: dict[str, Any]) -> None:
    """A leeway for a field that is gone (or now required) is one a new field could hide in."""
    schemas = document["components"]["schemas"]
    for name, field in OLDER_SERVICES_OMIT | set(CLIENT_CONVERTS) | set(NARROWED):
        assert field in typing.get_type_hints(client_types()[name]), f"{name}.{field}"
    for name, field in OLDER_SERVICES_OMIT:
        component = schemas[counterpart(name)]
        assert field not in component.get("required", []), f"{name}.{field} has no default"


def test_the_webhook_event_types_are_the_services(document: dict[str, Any]) -> None:
    """What ``POST /webhooks`` takes, in the service's order."""
    events = document["components"]["schemas"]["WebhookCreate"]["properties"]["events"]
    assert tuple(events["items"]["enum"]) == models.WEBHOOK_EVENT_TYPES


# --- the client's calls -----------------------------------------------------------------------

ID = str(uuid.UUID(int=1))
USER_TURN: models.Message = {"role": "user", "content": "hi"}
Call = Callable[[UnlearnClient], object]
#: Each method that calls the API once, as called here; several calls for bodies with variants.
CALLS: dict[str, list[Call]] = {
    "base_models": [lambda c: c.base_models()],
    "get_base_model": [lambda c: c.get_base_model("bert-tiny")],
    "create_model": [
        lambda c: c.create_model("m", labels=["a", "b"], n_shards=2, placement="sample"),
        lambda c: c.create_model("m", task="causal_lm", base_model="tiny-llama"),
    ],
    "get_model": [lambda c: c.get_model(ID)],
    "model_status": [lambda c: c.model_status(ID)],
    "model_quality": [lambda c: c.model_quality(ID, limit=5)],
    "register_samples": [
        lambda c: c.register_samples(
            ID,
            [
                {"external_id": "s1", "text": "hello", "label": "a", "subject_id": "u1"},
                {"external_id": "s0", "text": "held out", "label": "b", "split": "eval"},
                {"external_id": "s2", "image": b"\x89PNG", "label": 1},
                {"external_id": "s3", "features": [0.5], "label": 0.25},
                {"external_id": "s4", "prompt": "hi", "response": "hello"},
                {
                    "external_id": "s5",
                    "messages": [USER_TURN, {"role": "assistant", "content": "yo"}],
                },
            ],
        )
    ],
    "train": [lambda c: c.train(ID)],
    "predict": [lambda c: c.predict(ID, ["a text"]), lambda c: c.predict(ID, images=[b"png"])],
    "generate": [
        lambda c: c.generate(ID, "hi", stop=["\n"]),
        lambda c: c.generate(ID, messages=[USER_TURN]),
    ],
    "generate_stream": [lambda c: list(c.generate_stream(ID, "hi"))],
    "score": [lambda c: c.score(ID, ["yes"], "hi")],
    "get_job": [lambda c: c.get_job(ID)],
    "request_deletion": [
        lambda c: c.request_deletion(ID, sample_ids=["s1"]),
        lambda c: c.request_deletion(
            ID, subject_id="u1", method="auto", method_config={}, idempotency_key="k"
        ),
    ],
    "delete_class": [lambda c: c.delete_class(ID, "a", path="approximate", method="auto")],
    "get_deletion": [lambda c: c.get_deletion(ID)],
    "list_deletions": [lambda c: c.list_deletions(model_id=ID, status="completed", cursor="x")],
    "retry_deletion": [lambda c: c.retry_deletion(ID)],
    "get_certificate": [lambda c: c.get_certificate(ID)],
    "verify_deletion": [
        lambda c: c.verify_deletion(ID, sample_id="s1"),
        lambda c: c.verify_deletion(ID, subject_id="u1"),
    ],
    "audit_log": [lambda c: c.audit_log(ID, after_seq=2, cursor="x", limit=10)],
    "verify_audit_log_on_service": [lambda c: c.verify_audit_log_on_service(ID)],
    "request_exactness_audit": [
        lambda c: c.request_exactness_audit(ID),
        lambda c: c.request_exactness_audit(ID, shards=[0, 1]),
    ],
    "list_exactness_audits": [lambda c: c.list_exactness_audits(ID)],
    "get_exactness_audit": [lambda c: c.get_exactness_audit(ID, ID)],
    "list_keys": [lambda c: c.list_keys()],
    "create_key": [lambda c: c.create_key("ci", "admin")],
    "rotate_key": [lambda c: c.rotate_key(ID)],
    "revoke_key": [lambda c: c.revoke_key(ID)],
    "rotate_hash_secret": [lambda c: c.rotate_hash_secret()],
    "create_webhook": [
        lambda c: c.create_webhook("https://example.com/h", ["deletion.completed"]),
        lambda c: c.create_webhook("https://example.com/h", ["model.ready"], description="d"),
    ],
    "list_webhooks": [lambda c: c.list_webhooks()],
    "get_webhook": [lambda c: c.get_webhook(ID)],
    "delete_webhook": [lambda c: c.delete_webhook(ID)],
    "rotate_webhook_secret": [lambda c: c.rotate_webhook_secret(ID)],
    "ping_webhook": [lambda c: c.ping_webhook(ID)],
    "list_webhook_deliveries": [lambda c: c.list_webhook_deliveries(ID)],
    "get_webhook_delivery": [lambda c: c.get_webhook_delivery(ID)],
    "redeliver_webhook_delivery": [lambda c: c.redeliver_webhook_delivery(ID)],
}
#: Methods made of the ones above (or of no call at all).
COMPOSED = {
    "close",
    "delete_subject",
    "iter_audit_log",
    "iter_deletions",
    "verify_audit_log",
    "wait_for_deletion",
    "wait_for_exactness_audit",
    "wait_until_ready",
}
#: Methods that return a field of their route's answer.
UNWRAPS = {"base_models": "items"}
#: A stream's return type is its events, not the route's JSON answer.
STREAMS = {"generate_stream"}


def test_every_client_method_is_checked() -> None:
    public = {n for n, _ in inspect.getmembers(UnlearnClient, inspect.isfunction)}
    public = {n for n in public if not n.startswith("_")}
    assert public == set(CALLS) | COMPOSED


def sent_by(call: Call) -> list[httpx.Request]:
    """The requests one call sends, each answered 200 with a body every method can read."""
    requests: list[httpx.Request] = []
    answer = {"items": [], "stored": 0, "errors": [], "balance": {}}

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if "text/event-stream" in request.headers.get("Accept", ""):
            return httpx.Response(200, text="", headers={"Content-Type": "text/event-stream"})
        return httpx.Response(200, json=answer)

    with UnlearnClient("http://api", "key", transport=httpx.MockTransport(handle)) as client:
        call(client)
    return requests


JSON_CHECKS: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}
LIMITS: dict[str, Callable[[Any, Any], bool]] = {
    "minLength": lambda v, n: len(v) >= n,
    "maxLength": lambda v, n: len(v) <= n,
    "minItems": lambda v, n: len(v) >= n,
    "maxItems": lambda v, n: len(v) <= n,
    "minimum": lambda v, n: v >= n,
    "maximum": lambda v, n: v <= n,
    "exclusiveMinimum": lambda v, n: v > n,
    "exclusiveMaximum": lambda v, n: v < n,
    "pattern": lambda v, p: re.search(p, v) is not None,
}


def refusals(value: Any, schema: dict[str, Any], components: dict[str, Any], at: str) -> list[str]:
    """Why the service's schema refuses ``value`` (nothing: it takes it). The JSON Schema
    keywords the document's request bodies use; the service's own validators may refuse more."""
    if "$ref" in schema:
        return refusals(value, components[schema["$ref"].rsplit("/", 1)[1]], components, at)
    if "anyOf" in schema:
        each = [refusals(value, s, components, at) for s in schema["anyOf"]]
        return [] if [] in each else [f"{at}: {value!r} fits none of {each}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r} is not one of {schema['enum']}"]
    kind = schema.get("type")
    if kind is not None and not JSON_CHECKS[kind](value):
        return [f"{at}: {value!r} is not {kind}"]
    found = [
        f"{at}: {k} {n!r}" for k, n in schema.items() if k in LIMITS and not LIMITS[k](value, n)
    ]
    if kind == "array":
        for i, item in enumerate(value):
            found += refusals(item, schema.get("items", {}), components, f"{at}[{i}]")
    if kind == "object":
        props = schema.get("properties", {})
        found += [f"{at}: {k!r} is required" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in props:
                found += refusals(item, props[key], components, f"{at}.{key}")
            elif schema.get("additionalProperties", True) is False:
                found.append(f"{at}: {key!r} is not a field")
    return found


def operation(doc: dict[str, Any], request: httpx.Request) -> dict[str, Any]:
    path = request.url.path
    for template, operations in doc["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            op = operations.get(request.method.lower())
            if op is not None:
                return op  # type: ignore[no-any-return]
    raise AssertionError(f"the service has no {request.method} {path}")


@pytest.mark.parametrize("method", sorted(CALLS))
def test_the_client_sends_what_the_service_takes(document: dict[str, Any], method: str) -> None:
    """Each call's route exists, its body validates against the route's request schema (the
    service's `extra="forbid"`: no unknown key), and its query parameters are the route's."""
    for call in CALLS[method]:
        [request] = sent_by(call)
        op = operation(document, request)
        body = json.loads(request.content) if request.content else None
        schema = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        if "schema" in schema:
            components = document["components"]["schemas"]
            refused = refusals(body, schema["schema"], components, method)
            assert not refused, f"the service refuses {body}: {refused}"
        else:
            assert body is None, f"{method} sends a body its route does not take"
        query = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        unknown = set(request.url.params) - query
        assert not unknown, f"{method}: the route takes no query parameter {unknown}"


@pytest.mark.parametrize("method", sorted(set(CALLS) - STREAMS))
def test_the_client_returns_what_the_route_answers(document: dict[str, Any], method: str) -> None:
    [request] = sent_by(CALLS[method][0])
    op = operation(document, request)
    [(status, answer)] = [(s, r) for s, r in op["responses"].items() if s.startswith("2")]
    returns = typing.get_type_hints(getattr(UnlearnClient, method))["return"]
    if status == "204":
        assert returns is type(None), f"{method}: the route answers no content"
        return
    schema = answer["content"]["application/json"]["schema"]
    if method in UNWRAPS:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = document["components"]["schemas"][name]["properties"][UNWRAPS[method]]
    theirs = as_detail(json_shape(schema, document["components"]["schemas"]))
    assert py_shape(returns) == theirs, f"{method} returns {returns}, its route {show(theirs)}"


def as_detail(shape: Shape) -> Shape:
    """``shape`` with each brief component read as the client type that also stands for it."""
    details = {brief: counterpart(name) for name, brief in BRIEF_COUNTERPARTS.items()}
    if isinstance(shape, tuple) and shape[0] == "ref":
        return ("ref", details.get(shape[1], shape[1]))
    if isinstance(shape, tuple) and shape[0] in ("list", "dict"):
        return (shape[0], as_detail(shape[1]))
    if isinstance(shape, tuple) and shape[0] == "union":
        return union([as_detail(m) for m in shape[1]])
    return shape
