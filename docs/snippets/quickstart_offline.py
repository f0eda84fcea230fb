"""Resolve flags from a local state file, with no network at all."""

from pathlib import Path
from tempfile import TemporaryDirectory

from openfeature import api
from openfeature.evaluation_context import EvaluationContext

from confidence import ConfidenceProvider
from confidence.testing.state_builder import StateBuilder, attribute_eq, rollout

new = "flags/checkout/variants/new"
state = (
    StateBuilder(account="my-account")
    .client("my-secret")
    .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
    .flag(
        "flags/checkout",
        variants={new: {"enabled": True, "layout": "grid"}},
        rules=[rollout("segments/sweden", {new: 100})],
    )
)

with TemporaryDirectory() as tmp:
    state_file = Path(tmp) / "state.pb"
    state_file.write_bytes(state.build_client_state())

    api.set_provider_and_wait(
        ConfidenceProvider("my-secret", state_file=state_file, offline=True)
    )
    client = api.get_client()

    sweden = EvaluationContext("alice", {"country": "SE"})
    details = client.get_string_details("checkout.layout", "classic", sweden)
    print(details.value, details.reason, details.variant)
    # grid TARGETING_MATCH flags/checkout/variants/new

    elsewhere = EvaluationContext("bob", {"country": "US"})
    print(client.get_string_value("checkout.layout", "classic", elsewhere))
    # classic  (no rule matched: your default, reason DEFAULT)

    api.shutdown()
