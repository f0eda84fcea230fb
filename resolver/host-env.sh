# Sourced by test.sh and lint.sh: Debian's toolchain and packaged crates only (rustup's may be
# first on PATH; crates.io is not reachable in CI), then cd into the crate.
CRATE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CARGO_HOME="$CRATE_DIR/.cargo-home"
export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export PATH="/usr/bin:$PATH"
export PROTOC="${PROTOC:-/usr/bin/protoc}"
mkdir -p "$CARGO_HOME"
cp "$CRATE_DIR/.cargo/config.toml" "$CARGO_HOME/config.toml"
cd "$CRATE_DIR"
