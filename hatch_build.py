"""Put the repo root's resolver.wasm into the wheel as confidence/resolver.wasm.

Editable installs skip it: from a checkout the package finds ../resolver.wasm itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        wasm = Path(self.root) / "resolver.wasm"
        if not wasm.is_file():
            raise RuntimeError("resolver.wasm is missing: build it with `nox -s wasm`")
        build_data["force_include"][str(wasm)] = "confidence/resolver.wasm"
