#!/usr/bin/env bash
# Runs the resolver's host unit tests with Debian's toolchain and packaged crates.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/host-env.sh"
exec /usr/bin/cargo test --offline --locked "$@"
