#!/usr/bin/env bash
# Lints the resolver with Debian's toolchain and packaged crates: rustfmt (check only) and
# clippy on every target with warnings as errors. `bash resolver/lint.sh`
set -euo pipefail
CRATE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CARGO_HOME="$CRATE_DIR/.cargo-home"
export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export PATH="/usr/bin:$PATH"
export PROTOC="${PROTOC:-/usr/bin/protoc}"
mkdir -p "$CARGO_HOME"
cp "$CRATE_DIR/.cargo/config.toml" "$CARGO_HOME/config.toml"
cd "$CRATE_DIR"
/usr/bin/cargo fmt --check
/usr/bin/cargo clippy --offline --locked --all-targets -- -D warnings
