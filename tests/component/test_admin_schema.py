"""Schemathesis over the admin API's own ``/openapi.json``, against a real running ingress.

Every operation gets schema-valid and schema-breaking requests (with the bearer token);
each answer must be no 5xx, a documented status, JSON of the documented schema. A live
call and a runner exist, under the ids the document uses as examples, so that the
success paths are exercised too, not only the 404s.

Random text seldom looks like a number, so the fuzzer also gives integer query
parameters number look-alikes: other scripts' digits, superscripts and the like, signs,
a run of digits too long for ``int()``; what a lax parser takes for digits and then
chokes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.cluster_data import make_call, register_runner
from tests.support.ingress_admin import EXAMPLE_CALL_ID, EXAMPLE_RUNNER_ID, admin_ingress

TOKEN = "schema-token-0123456789abcdef"


@pytest.fixture(scope="module")
def admin_url(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
        make_call(client, EXAMPLE_CALL_ID)
        register_runner(client, EXAMPLE_RUNNER_ID, capacity=10, load=3)
    finally:
        client.close()
    with admin_ingress(tmp_path_factory.mktemp("schema"), redis_server, TOKEN) as url:
        yield url


LOOKALIKES = ["\u00b2", "\u0663", "\uff15", "\u2460", "+1", " 1", "1_0", "1e3", "9" * 5000]
"""Superscript two, Arabic-Indic three, fullwidth five, circled one, then ASCII tricks."""
LOOKALIKE_TEXT = st.one_of(
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=3),
    st.sampled_from(LOOKALIKES),
)


def with_lookalikes(
    context: schemathesis.HookContext, query: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """The generated query as it is, or with an integer parameter set to a look-alike."""
    operation = context.operation
    names = [
        parameter.name
        for parameter in (operation.query if operation is not None else [])
        if parameter.definition["schema"].get("type") == "integer"
    ]
    if not names:
        return st.just(query)
    swapped = st.tuples(st.sampled_from(names), LOOKALIKE_TEXT).map(
        lambda swap: {**(query or {}), swap[0]: swap[1]}
    )
    return st.one_of(st.just(query), swapped)


@pytest.fixture(scope="module")
def admin_schema(admin_url: str) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{admin_url}/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    schema.hook("flatmap_query")(with_lookalikes)
    return schema


schema = schemathesis.pytest.from_fixture("admin_schema")


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_admin_api_keeps_its_openapi_contract(case: schemathesis.Case[Any]) -> None:
    # Every check but "schema-valid data is accepted": whether a transfer target exists
    # depends on the reloadable policy and the call's profile, which no static schema
    # can say, so a well-formed but unknown target is rightly a 422.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        excluded_checks=[positive_data_acceptance],
    )
