"""`python -m confidence demo`: the provider end to end, on this machine, with no account.

It starts the Confidence emulator on 127.0.0.1 serving a sample state built here (with
`confidence.testing.state_builder`), registers a `ConfidenceProvider` pointed at it with
OpenFeature, resolves flags through the sync client and the async client, shuts down (which
flushes the exposure logs) and shows what the emulator received.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from typing import Any, TextIO

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails

from confidence._sdk_compat import set_provider_and_wait
from confidence.provider import ConfidenceProvider
from confidence.testing.emulator import ConfidenceEmulator
from confidence.testing.state_builder import StateBuilder, attribute_eq, rollout

__all__ = ["DEMO_ACCOUNT", "DEMO_SECRET", "demo_state", "run_demo"]

DEMO_SECRET = "demo-client-secret"
DEMO_ACCOUNT = "demo-account"
USERS = (
    EvaluationContext("alice", {"country": "SE"}),
    EvaluationContext("bob", {"country": "US"}),
    EvaluationContext("carol", {"country": "SE"}),
    EvaluationContext("dave"),
)


def _variant(flag: str, name: str) -> str:
    return f"flags/{flag}/variants/{name}"


def demo_state() -> bytes:
    """A small state: a 50/50 experiment, a country-targeted flag and a full rollout."""
    return (
        StateBuilder(account=DEMO_ACCOUNT)
        .client(DEMO_SECRET, name="clients/demo")
        .segment("segments/everyone")
        .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
        .flag(
            "flags/checkout-redesign",
            variants={
                _variant("checkout-redesign", "control"): {"enabled": False, "layout": "classic"},
                _variant("checkout-redesign", "treatment"): {"enabled": True, "layout": "grid"},
            },
            rules=[
                rollout(
                    "segments/everyone",
                    {
                        _variant("checkout-redesign", "control"): 50,
                        _variant("checkout-redesign", "treatment"): 50,
                    },
                )
            ],
        )
        .flag(
            "flags/pricing",
            variants={_variant("pricing", "nordic"): {"discount": 0.15, "currency": "SEK"}},
            rules=[rollout("segments/sweden", {_variant("pricing", "nordic"): 100})],
        )
        .flag(
            "flags/banner",
            variants={_variant("banner", "welcome"): {"text": "Welcome!", "max_items": 5}},
            rules=[rollout("segments/everyone", {_variant("banner", "welcome"): 100})],
        )
        .build()
    )


Row = tuple[str, str, str, str, str, str]


def _row(how: str, user: str, details: FlagEvaluationDetails[Any]) -> Row:
    variant = (details.variant or "-").rsplit("/", 1)[-1]
    reason = str(getattr(details.reason, "value", details.reason))
    extra = f"  [{details.error_code.value}: {details.error_message}]" if details.error_code else ""
    return (how, user, details.flag_key, repr(details.value), variant, reason + extra)


def _write_table(out: TextIO, rows: list[Row]) -> None:
    """Columns as wide as their widest cell (object values are long), the last one free."""
    header: Row = ("via", "user", "flag", "value", "variant", "reason")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(r[:-1], widths, strict=True)]
        out.write("  " + "  ".join([*cells, r[-1]]) + "\n")


def _sync_part(client: OpenFeatureClient) -> list[Row]:
    rows = []
    for ctx in USERS:
        user = ctx.targeting_key or "-"
        rows.append(
            _row("sync", user, client.get_boolean_details("checkout-redesign.enabled", False, ctx))
        )
        rows.append(_row("sync", user, client.get_float_details("pricing.discount", 0.0, ctx)))
    # Errors come back as the caller's default with a code, never as an exception.
    rows.append(
        _row("sync", "alice", client.get_string_details("no-such-flag", "fallback", USERS[0]))
    )
    rows.append(_row("sync", "alice", client.get_integer_details("banner.text", 0, USERS[0])))
    return rows


async def _async_part(client: OpenFeatureClient) -> list[Row]:
    rows = []
    for ctx in USERS[:2]:
        user = ctx.targeting_key or "-"
        rows.append(
            _row("async", user, await client.get_string_details_async("banner.text", "", ctx))
        )
        rows.append(
            _row("async", user, await client.get_integer_details_async("banner.max_items", 0, ctx))
        )
        rows.append(
            _row("async", user, await client.get_object_details_async("checkout-redesign", {}, ctx))
        )
    return rows


def run_demo(out: TextIO = sys.stdout) -> int:
    with ConfidenceEmulator(client_secret=DEMO_SECRET).run_in_thread() as emulator:
        emulator.set_state(demo_state(), account_id=DEMO_ACCOUNT)
        out.write(f"Confidence emulator on {emulator.base_url} (state CDN + flag-log ingest)\n")
        provider = ConfidenceProvider(
            DEMO_SECRET,
            encryption_key=emulator.encryption_key_hex,
            cdn_base_url=emulator.cdn_base_url,
            api_base_url=emulator.api_base_url,
        )
        out.write(f"Provider: {provider!r}\n")
        set_provider_and_wait(provider)  # blocks until the first state is loaded
        client = api.get_client()
        out.write(f"Provider status: {client.get_provider_status().value}\n\n")
        rows = _sync_part(client)
        rows += asyncio.run(_async_part(client))
        _write_table(out, rows)

        out.write("\nShutting down (flushes the exposure logs)...\n")
        api.shutdown()

        batches = emulator.all_flag_log_batches()
        exposures: Counter[str] = Counter()
        for batch in batches:
            for assigned in batch.flag_assigned:
                for applied in assigned.flags:
                    exposures[applied.flag] += 1
        out.write(f"The emulator received {len(batches)} flag-log request(s):\n")
        for flag, count in sorted(exposures.items()):
            out.write(f"  exposures  {flag:<26} {count}\n")
        for flag, per_variant in sorted(emulator.resolve_counts().items()):
            counts = ", ".join(
                f"{(v.rsplit('/', 1)[-1] or '(no variant)')}={n}"
                for v, n in sorted(per_variant.items())
            )
            out.write(f"  resolves   {flag:<26} {counts}\n")
    out.write("Done.\n")
    return 0 if exposures else 1
