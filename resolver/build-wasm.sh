#!/usr/bin/env bash
# Builds the release resolver.wasm with Debian's toolchain, reproducibly.
#   bash resolver/build-wasm.sh [OUTPUT]   (default: <repo>/resolver.wasm)
set -euo pipefail
CRATE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$CRATE_DIR/.." && pwd)"
OUT="${1:-$REPO_DIR/resolver.wasm}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

# Debian's rustc/cargo only (rustup's may be first on PATH).
export PATH="/usr/bin:$PATH"
export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export PROTOC="${PROTOC:-/usr/bin/protoc}"
# An isolated cargo home: Debian's packaged crates, nothing from ~/.cargo.
export CARGO_HOME="$CRATE_DIR/.cargo-home"
mkdir -p "$CARGO_HOME"
cp "$CRATE_DIR/.cargo/config.toml" "$CARGO_HOME/config.toml"
# Reproducible: no absolute paths from this clone or the registry in the output.
export RUSTFLAGS="--remap-path-prefix=$CRATE_DIR=/resolver --remap-path-prefix=$REPO_DIR=/repo --remap-path-prefix=$CARGO_HOME=/cargo-home --remap-path-prefix=/usr/share/cargo/registry=/registry -C debuginfo=0 -C strip=symbols"
export SOURCE_DATE_EPOCH=0
export CARGO_INCREMENTAL=0
unset CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR || true

cd "$CRATE_DIR"
/usr/bin/cargo build --offline --locked --release --target wasm32-unknown-unknown --lib
BUILT="$CRATE_DIR/target/wasm32-unknown-unknown/release/confidence_resolver.wasm"
TMP="$(mktemp "${OUT}.XXXXXX")"
cp "$BUILT" "$TMP"
# Drop custom sections (names, producers) that could carry build details.
wasm-strip "$TMP"
mv -f "$TMP" "$OUT"
echo "wrote $OUT ($(wc -c < "$OUT") bytes)"
