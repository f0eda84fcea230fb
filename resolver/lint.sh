#!/usr/bin/env bash
# Lints the resolver with Debian's toolchain and packaged crates: rustfmt (check only) and
# clippy on every target with warnings as errors. `bash resolver/lint.sh`
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/host-env.sh"
/usr/bin/cargo fmt --check
/usr/bin/cargo clippy --offline --locked --all-targets -- -D warnings
