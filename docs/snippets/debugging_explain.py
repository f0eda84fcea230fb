"""Why does a user get what they get? `provider.explain()` on a local state."""

from pathlib import Path
from tempfile import TemporaryDirectory

from openfeature import api
from openfeature.evaluation_context import EvaluationContext

from confidence import ConfidenceProvider
from confidence.testing.state_builder import (
    StateBuilder,
    attribute_eq,
    attribute_in,
    rollout,
)

v = "flags/checkout/variants/"
state = (
    StateBuilder(account="my-account")
    .client("my-secret", name="clients/web")
    .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
    .segment(
        "segments/nordics",
        targeting=attribute_in("country", ["NO", "DK", "FI"]),
    )
    .flag(
        "flags/checkout",
        variants={
            v + "grid": {"layout": "grid"},
            v + "list": {"layout": "list"},
        },
        rules=[
            rollout(
                "segments/sweden",
                {v + "grid": 100},
                name="flags/checkout/rules/sweden",
            ),
            # half of the Nordic users get the grid, the other half the default
            rollout(
                "segments/nordics",
                {v + "grid": 50},
                name="flags/checkout/rules/nordics",
                bucket_count=100,
            ),
        ],
    )
)

with TemporaryDirectory() as tmp:
    state_file = Path(tmp) / "state.pb"
    state_file.write_bytes(state.build_client_state())
    provider = ConfidenceProvider(
        "my-secret", state_file=state_file, offline=True
    )
    api.set_provider_and_wait(provider)

    why = provider.explain(
        "checkout", EvaluationContext("user-7", {"country": "NO"})
    )
    print(why.render())
    print()
    bucketing = why.rules[1].bucketing
    assert bucketing is not None and bucketing.assignment is not None
    print(
        why.variant, why.reason, bucketing.bucket, bucketing.assignment.ranges
    )
    print()
    print(
        provider.explain(
            "checkout", {"targeting_key": "user-7", "country": "US"}
        ).render()
    )

    api.shutdown()
