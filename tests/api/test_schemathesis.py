"""Schemathesis against the served OpenAPI document (issue 11).

The document is loaded from /api/v1/schema/ through the in-process WSGI app, and every
operation is exercised with every built-in check (`not_a_server_error`, the status code,
content type, header and schema conformance checks, `positive_data_acceptance`,
`negative_data_rejection`, `missing_required_header`, `unsupported_method`,
`allow_header_conformance`, `ignored_auth`, `use_after_free`,
`ensure_resource_availability`, ...): with the credential it is meant for, on generated ids
and on the objects that exist; with each of the other credentials, whose refusals must be
well-formed too; and in a stateful run over the links Schemathesis infers from the
document (it declares none). Bounded and reproducible: a fixed seed, deterministic
generation, a few examples per operation and no example database. The data is committed
for real, as the app runs its own transactions; each operation gets a fresh world, and so
does each stateful scenario.

Rules that no JSON schema can state (a secret in its provider's own format, an egress
policy that depends on configuration and DNS) are listed in KNOWN_GAPS, each excusing one
check for the operations and the requests it concerns, and only for the refusal that rule
causes; BY_DESIGN names the one behaviour Schemathesis would otherwise flag (a revoked key
stays readable).
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import schemathesis
import schemathesis.checks
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.core.parameters import ParameterLocation
from schemathesis.errors import FailureGroup

from kms.validators import BASE_URL_PATTERN
from tenants.actions import do_create_grant
from tests.conftest import _reset_committed_state as reset_committed_state
from tests.factories import client, make_admin, make_principal, make_tenant
from tests.kms.helpers import openai_key
from tests.kms.world import SYSTEM, onboard_key

ROLES = ("admin", "auditor", "principal", "token")
SCHEMA_PATH = "/api/v1/schema/"
# The budget: a few minutes per database on two cores. Schemathesis adds its coverage cases
# (boundaries, missing and mistyped fields, unexpected methods and media types) to the
# examples of each operation.
# The second backend of a run sends the first examples of each again (generation is
# derandomized) to its own database: fewer of them, since only the database differs.
SEED = 20250611
AGAIN = os.environ.get("KEYWARD_TEST_DATABASE_ONLY") == "1"
EXAMPLES = 10 if AGAIN else 25  # per operation, with its own credential
EXAMPLES_FOR_OTHERS = 2 if AGAIN else 5  # per operation, with each of the three others
SCENARIOS, STEPS = (10 if AGAIN else 25), 10  # stateful


def intended_role(path: str) -> str:
    """The credential an operation is meant for."""
    if path in ("/api/v1/tokens", "/api/v1/tokens/introspect", "/api/v1/tokens/revoke"):
        return "principal"
    if path == "/api/v1/exchange":
        return "token"
    if path.startswith("/api/v1/audit/"):
        return "auditor"
    return "admin"


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "suppress-health-check": ["all"],
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        "checks": {"enabled": True},
        "phases": {"stateful": {"max-steps": STEPS}},
    }
)
# Hypothesis keeps caches (constants it collects from the code, Unicode tables) in its
# storage directory: outside the checkout.
set_hypothesis_home_dir(
    Path(os.environ.get("KEYWARD_TEST_TMP") or tempfile.gettempdir()) / "keyward-hypothesis"
)
# Loaded at collection: generating the document touches no database.
SCHEMA = schemathesis.openapi.from_wsgi(SCHEMA_PATH, get_wsgi_application(), config=CONFIG)


# Known gaps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request and its answer, as a known gap is matched against them."""

    case: Any
    response: Any

    @property
    def body(self) -> dict[str, Any]:
        return self.case.body if isinstance(self.case.body, dict) else {}

    @property
    def error(self) -> dict[str, Any]:
        """The refusal's `error` object, or {}."""
        try:
            error = self.response.json().get("error")
        except (ValueError, AttributeError):
            return {}
        return error if isinstance(error, dict) else {}


@dataclass(frozen=True)
class KnownGap:
    """Schema-valid requests the server refuses with 400 for a rule the document does not
    state yet: the refusal is excused when it carries `code`, or when every field it names
    is one some gap excuses, and only where `applies` holds for the request."""

    why: str
    operations: frozenset[str]
    applies: Callable[[Sent], bool]
    field: str = ""
    code: str = ""
    check: str = "positive_data_acceptance"


def excluded_checks(sent: Sent) -> list[Any]:
    """The checks a known gap excuses for this request, if any."""
    label = sent.case.operation.label
    excused_by_design = {
        gap.check for gap in BY_DESIGN if label in gap.operations and gap.applies(sent)
    }
    if sent.response.status_code != 400:
        return [getattr(schemathesis.checks, check) for check in sorted(excused_by_design)]
    gaps = [
        gap
        for gap in KNOWN_GAPS
        if sent.case.operation.label in gap.operations and gap.applies(sent)
    ]
    named = set(sent.error.get("fields") or {})
    excused = set()
    for check in {gap.check for gap in gaps}:
        fields = {gap.field for gap in gaps if gap.check == check and gap.field}
        codes = {gap.code for gap in gaps if gap.check == check and gap.code}
        if sent.error.get("code") in codes or (named and named <= fields):
            excused.add(check)
    return [getattr(schemathesis.checks, check) for check in sorted(excused | excused_by_design)]


def _secret_of_the_documented_shape(sent: Sent) -> bool:
    """A secret the document's pattern admits: printable ASCII without spaces, 1-1024."""
    secret = sent.body.get("secret")
    return isinstance(secret, str) and SECRET_SHAPE.fullmatch(secret) is not None


def _base_url_of_the_documented_shape(sent: Sent) -> bool:
    value = sent.body.get("base_url")
    return isinstance(value, str) and BASE_URL_PATTERN.match(value) is not None


SECRET_SHAPE = re.compile(r"[!-~]{1,1024}")
KEY_CREATION = frozenset(
    {
        "POST /api/v1/tenants/{slug}/keys",
        "POST /api/v1/tenants/{slug}/keys/{key_id}/rotate",
        "POST /api/v1/tenants/{slug}/keys/{key_id}/rotations",
    }
)
KEY_READS = frozenset(
    {
        "GET /api/v1/tenants/{slug}/keys/{key_id}",
        "GET /api/v1/tenants/{slug}/keys/{key_id}/tokens",
        "GET /api/v1/tenants/{slug}/keys/{key_id}/validations",
    }
)

# Rules no JSON schema can state, each excused only where it applies.
KNOWN_GAPS = [
    KnownGap(
        "By design: a secret of the documented shape must also be in its provider's own key"
        " format (and not another provider's), which depends on the `provider` field"
        " (kms.providers.check_secret_shape).",
        KEY_CREATION,
        _secret_of_the_documented_shape,
        code="invalid_secret",
    ),
    KnownGap(
        "By design: whether the egress policy allows a base_url of the documented shape"
        " depends on configuration and DNS at the time (core.egress).",
        frozenset({"POST /api/v1/tenants/{slug}/keys"}),
        _base_url_of_the_documented_shape,
        code="forbidden_base_url",
    ),
]
KNOWN_GAPS += [
    KnownGap(
        "By design: `admin_credential` must name an admin credential of the same tenant and"
        " provider, and `upstream` settings belong to admin credentials of a provider whose"
        " admin API Keyward knows; no schema states which ids exist.",
        frozenset(
            {"POST /api/v1/tenants/{slug}/keys", "PATCH /api/v1/tenants/{slug}/keys/{key_id}"}
        ),
        lambda sent: bool(
            sent.body.get("admin_credential")
            or sent.body.get("upstream")
            or sent.body.get("kind") == "admin"
        ),
        code="invalid",
    ),
    KnownGap(
        "OpenAPI 3.0 cannot state the names of `upstream` settings (no propertyNames): names"
        " outside [a-z][a-z0-9_]* are refused, and lone surrogates in them cannot be parsed.",
        frozenset({"POST /api/v1/tenants/{slug}/keys"}),
        lambda sent: "upstream" in sent.body or "upstream" in str(sent.case.body),
        code="malformed_body",
    ),
    KnownGap(
        "By design: a rotation without a secret needs the key to have an admin credential"
        " that creates keys at its provider.",
        frozenset({"POST /api/v1/tenants/{slug}/keys/{key_id}/rotations"}),
        lambda sent: "secret" not in sent.body,
        field="secret",
    ),
]
KNOWN_GAPS.append(
    KnownGap(
        "By design: a tenant moves, or is pinned, only to a secret store this deployment"
        " configures (settings' SECRET_STORES); no schema states their names.",
        frozenset({"POST /api/v1/tenants/{slug}/moves", "PATCH /api/v1/tenants/{slug}"}),
        lambda sent: "store" in sent.body,
        field="store",
    )
)
KNOWN_GAPS.append(
    KnownGap(
        "By design: a cursor is opaque; only one the API issued (a page's next or previous)"
        " names a position.",
        frozenset({"GET /api/v1/audit/events"}),
        lambda sent: bool((sent.case.query or {}).get("cursor")),
        field="cursor",
    )
)
# A revoked key is kept, readable as `status: revoked`, for the record: a DELETE revokes
# it and destroys its versions, and reads of it still answer.
BY_DESIGN = [
    KnownGap(
        "By design: a key is checked with its provider unless ?validate=false, and a"
        " provider that cannot be reached at a generated base_url is a dependency that is"
        " down: 503 provider_unavailable, as documented.",
        frozenset({*KEY_CREATION, "POST /api/v1/tenants/{slug}/keys/{key_id}/validate"}),
        lambda sent: (
            sent.response.status_code == 503 and sent.error.get("code") == "provider_unavailable"
        ),
        check="not_a_server_error",
    ),
    KnownGap(
        "By design: a revoked key stays readable (status `revoked`).",
        KEY_READS,
        lambda sent: sent.response.status_code == 200,
        check="use_after_free",
    ),
]

# Running ---------------------------------------------------------------------------------

Value = str | Callable[[], str]


@dataclass(frozen=True)
class World:
    """The credentials; the objects that exist (tenant A with its active key, the
    principal, its grant on tenant A / openai, its token with both scopes), as path
    parameters and as the body fields that name them; and values that follow the rules of
    the body fields whose rules the document does not state (or cannot: key formats)."""

    credentials: dict[str, str]
    path: dict[str, str]
    objects: dict[str, dict[str, Value]]
    valid: dict[str, dict[str, Value]]


_serial = itertools.count(1)


def _fresh(prefix: str) -> Callable[[], str]:
    """New valid names, in the order they are made (listings sort by name)."""
    return lambda: f"{prefix}-{next(_serial):06d}"


def make_world(provider_url: str) -> World:
    """Tenants A and B with an active OpenAI key each, a security admin and an auditor over
    every tenant, a principal granted tenant A / openai / release+proxy at the deployment's
    TTL cap (a TTL above a grant's own cap is refused with 400 by design, which no document
    can state), a second principal with no grant, and a token of the first. Names are fixed,
    so listings come in the same order in every run."""
    tenant_a, tenant_b = make_tenant("tenant-a", "Tenant A"), make_tenant("tenant-b", "Tenant B")
    key_a = onboard_key(tenant_a, openai_key())
    onboard_key(tenant_b, openai_key())
    admin = make_admin("security_admin", username="alice")[1]
    auditor = make_admin("auditor", username="carol")[1]
    principal, secret = make_principal("svc-a")
    make_principal("svc-b")
    grant = do_create_grant(
        principal, tenant_a, "openai", ["release", "proxy"], settings.TOKEN_MAX_TTL, actor=SYSTEM
    )
    issued = client(secret).post(
        "/api/v1/tokens",
        {"tenant": "tenant-a", "provider": "openai", "scopes": ["release", "proxy"]},
        format="json",
    )
    assert issued.status_code == 201, issued.content
    token = issued.json()
    slug, principal_id = tenant_a.slug, str(principal.id)
    return World(
        credentials={
            "admin": admin,
            "auditor": auditor,
            "principal": secret,
            "token": token["token"],
        },
        path={
            "slug": slug,
            "key_id": str(key_a.id),
            "principal_id": principal_id,
            "grant_id": str(grant.id),
            "token_id": token["token_id"],
        },
        objects={
            "POST /api/v1/grants": {"principal": principal_id, "tenant": slug},
            "POST /api/v1/tokens": {"tenant": slug, "provider": "openai"},
            "POST /api/v1/tokens/introspect": {"token": token["token"]},
            "POST /api/v1/tokens/revoke": {"token": token["token"]},
        },
        valid={
            "POST /api/v1/tenants": {"slug": _fresh("fuzz")},
            "POST /api/v1/principals": {"name": _fresh("fuzz")},
            "POST /api/v1/tenants/{slug}/keys": {
                "provider": "openai",
                "secret": openai_key,
                "label": _fresh("fuzz"),
                "base_url": provider_url,
            },
            "POST /api/v1/tenants/{slug}/keys/{key_id}/rotate": {"secret": openai_key},
            "POST /api/v1/tenants/{slug}/keys/{key_id}/rotations": {"secret": openai_key},
        },
    )


@pytest.fixture
def fuzz_world(committed_db: None, provider_stub: Any, settings: Any) -> World:
    """Committed for real: the in-process app runs its own transactions. Rate limits are
    lifted: thousands of requests from one address in a minute are the point here."""
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    settings.RATE_LIMIT = (0, 60)
    settings.AUTH_FAILURE_LIMIT = 10**9
    return make_world(provider_stub.url)


def _valid_at(case: Any, location: ParameterLocation) -> bool:
    return case.meta is None or not case.meta.is_negative_at(location)


def fill_body(case: Any, values: dict[str, dict[str, Value]]) -> None:
    """Where a body was generated as valid data, give the fields `values` has for its
    operation those values."""
    pins = values.get(case.operation.label, {})
    if pins and isinstance(case.body, dict) and _valid_at(case, ParameterLocation.BODY):
        for name, value in pins.items():
            if name in case.body:
                case.body[name] = value() if callable(value) else value


def name_existing_objects(case: Any, world: World) -> None:
    """Point a case that is valid in its path and body at the objects that exist: generated
    ids almost never name anything, so most handlers would only ever say 404."""
    if _valid_at(case, ParameterLocation.PATH):
        for name in case.path_parameters or {}:
            if name in world.path:
                case.path_parameters[name] = world.path[name]
    fill_body(case, world.objects)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def credential(case: Any, role: str, world: World) -> dict[str, str]:
    """The `Authorization` header to send: the role's credential, unless Schemathesis
    generated the case to be invalid in its headers (a missing or malformed credential),
    which is then sent as generated."""
    if not _valid_at(case, ParameterLocation.HEADER):
        return {}
    return bearer(world.credentials[role])


def call_and_validate(case: Any, role: str, world: World) -> None:
    headers = credential(case, role, world)
    response = case.call(headers=headers)
    validate(case, response, headers)


def validate(case: Any, response: Any, headers: dict[str, str], **kwargs: Any) -> None:
    """Every enabled check, but those a known gap excuses for this request."""
    case.validate_response(
        response,
        headers=headers or None,
        excluded_checks=excluded_checks(Sent(case, response)),
        transport_kwargs={"headers": headers},
        **kwargs,
    )


# One world serves every example of an operation (function-scoped fixture under @given).
FUZZ = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# One test item per operation. Under pytest 9.2 Schemathesis 4.32's items of one test share
# a node id; the operation is in each item's name, which failure reports show.
@SCHEMA.parametrize()
@FUZZ
def test_each_operation_with_the_credential_it_is_meant_for(case: Any, fuzz_world: World) -> None:
    call_and_validate(case, intended_role(case.operation.path), fuzz_world)


@SCHEMA.parametrize()
@FUZZ
def test_each_operation_on_existing_objects(case: Any, fuzz_world: World) -> None:
    name_existing_objects(case, fuzz_world)
    call_and_validate(case, intended_role(case.operation.path), fuzz_world)


@SCHEMA.parametrize()
@hypothesis_settings(FUZZ, max_examples=EXAMPLES_FOR_OTHERS)
def test_each_operation_on_existing_objects_with_every_other_credential(
    case: Any, fuzz_world: World
) -> None:
    name_existing_objects(case, fuzz_world)
    for role in ROLES:
        if role != intended_role(case.operation.path):
            call_and_validate(case, role, fuzz_world)


class Stateful(SCHEMA.as_state_machine()):  # type: ignore[misc]
    """Sequences of calls along the inferred links, each with its intended credential.
    Failures are collected rather than raised: a scenario depends on what earlier ones left
    in the database, so Hypothesis could not replay it to shrink it."""

    world: World
    provider_url: ClassVar[str] = ""
    failures: ClassVar[dict[tuple[str, str], str]] = {}

    def setup(self) -> None:
        # Every scenario starts from the same world: what earlier scenarios created would
        # change the answers, and Hypothesis needs the same choices to lead to the same
        # calls.
        reset_committed_state()
        self.world = make_world(self.provider_url)

    def before_call(self, case: Any) -> None:
        # Deep sequences need creations that succeed: bodies valid by the document also
        # follow the rules it does not state yet, and name the objects that exist.
        fill_body(case, self.world.objects)
        fill_body(case, self.world.valid)

    def get_call_kwargs(self, case: Any) -> dict[str, Any]:
        return {"headers": credential(case, intended_role(case.operation.path), self.world)}

    def validate_response(
        self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
    ) -> None:
        try:
            validate(case, response, kwargs["headers"], recorder=self.recorder)
        except FailureGroup as group:
            for failure in group.exceptions:
                key = (case.operation.label, failure.title)
                self.failures.setdefault(key, str(group))


@pytest.mark.usefixtures("fuzz_world")
def test_stateful_runs_over_the_inferred_links(provider_stub: Any) -> None:
    Stateful.provider_url = provider_stub.url
    Stateful.failures = {}
    Stateful.run(
        settings=hypothesis_settings(FUZZ, max_examples=SCENARIOS, stateful_step_count=STEPS)
    )
    assert not Stateful.failures, "\n\n".join(
        f"{operation}: {title}\n{report}"
        for (operation, title), report in sorted(Stateful.failures.items())
    )
