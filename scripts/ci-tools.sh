#!/usr/bin/env bash
# Install what the deploy, client and event checks of `make test` need, idempotently: the shellcheck and
#   google-cloud-cli-pubsub-emulator Debian packages, firebase-tools (pinned) and the client tools
#   (openapi-typescript and typescript, pinned by tests/clients/package-lock.json) in a cache outside the repo.
#
#   scripts/ci-tools.sh                    install all four (skips what is already there)
#   scripts/ci-tools.sh firebase-tools     install firebase-tools only
#   scripts/ci-tools.sh shellcheck         install shellcheck only
#   scripts/ci-tools.sh client-tools       install the client tools only
#   scripts/ci-tools.sh pubsub-emulator    install the Pub/Sub emulator only (tests/test_publish.py)
#   scripts/ci-tools.sh --firebase-tools-dir
#                                          print where the pinned firebase-tools lives (installs nothing)
#   scripts/ci-tools.sh --client-tools-dir print where the pinned client tools live (installs nothing)
#
# The firebase-tools pin lives here and nowhere else; tests/test_indexes.py asks this script for the path.
# The client tools' pins live in tests/clients/; tests/test_clients.py asks this script for their path.
set -euo pipefail

FIREBASE_TOOLS_VERSION="15.34.2"
CACHE_ROOT="${XDG_CACHE_HOME:-${HOME}/.cache}/session-service"
FIREBASE_TOOLS_DIR="${CACHE_ROOT}/firebase-tools-${FIREBASE_TOOLS_VERSION}"
CLIENTS_SPEC="$(cd "$(dirname "$0")/.." && pwd)/tests/clients"
# Named by the lock's digest: a changed pin installs afresh beside the old one.
CLIENT_TOOLS_DIR="${CACHE_ROOT}/client-tools-$(sha256sum "${CLIENTS_SPEC}/package-lock.json" | cut -c1-12)"

install_shellcheck() {
    if command -v shellcheck >/dev/null 2>&1; then
        echo "shellcheck: $(shellcheck --version | sed -n 's/^version: //p') already installed"
        return
    fi
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq shellcheck >/dev/null
    echo "shellcheck: $(shellcheck --version | sed -n 's/^version: //p') installed"
}

install_pubsub_emulator() {
    local package=google-cloud-cli-pubsub-emulator
    if dpkg-query -W -f='${Status}' "${package}" 2>/dev/null | grep -q "install ok installed"; then
        echo "${package}: $(dpkg-query -W -f='${Version}' "${package}") already installed"
        return
    fi
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${package}" >/dev/null
    echo "${package}: $(dpkg-query -W -f='${Version}' "${package}") installed"
}

install_firebase_tools() {
    local api="${FIREBASE_TOOLS_DIR}/node_modules/firebase-tools/lib/firestore/api.js"
    if [[ -f "${api}" && -f "${FIREBASE_TOOLS_DIR}/.complete" ]]; then
        echo "firebase-tools ${FIREBASE_TOOLS_VERSION}: already in ${FIREBASE_TOOLS_DIR}"
        return
    fi
    command -v npm >/dev/null 2>&1 || { echo "error: npm is required to install firebase-tools" >&2; exit 1; }
    mkdir -p "${CACHE_ROOT}"
    # Install beside the final place, then move it there: an interrupted install never looks complete.
    local tmp
    tmp="$(mktemp -d "${CACHE_ROOT}/.firebase-tools-XXXXXX")"
    trap 'rm -rf "${tmp}"' EXIT
    npm install --prefix "${tmp}" --no-audit --no-fund --no-save --omit=dev --ignore-scripts --loglevel=error \
        "firebase-tools@${FIREBASE_TOOLS_VERSION}" >/dev/null
    touch "${tmp}/.complete"
    rm -rf "${FIREBASE_TOOLS_DIR}"
    mv "${tmp}" "${FIREBASE_TOOLS_DIR}"
    trap - EXIT
    echo "firebase-tools ${FIREBASE_TOOLS_VERSION}: installed in ${FIREBASE_TOOLS_DIR}"
}

install_client_tools() {
    if [[ -f "${CLIENT_TOOLS_DIR}/.complete" ]]; then
        echo "client tools: already in ${CLIENT_TOOLS_DIR}"
        return
    fi
    command -v npm >/dev/null 2>&1 || { echo "error: npm is required to install the client tools" >&2; exit 1; }
    mkdir -p "${CACHE_ROOT}"
    local tmp
    tmp="$(mktemp -d "${CACHE_ROOT}/.client-tools-XXXXXX")"
    trap 'rm -rf "${tmp}"' EXIT
    cp "${CLIENTS_SPEC}/package.json" "${CLIENTS_SPEC}/package-lock.json" "${tmp}/"
    npm ci --prefix "${tmp}" --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
    touch "${tmp}/.complete"
    rm -rf "${CLIENT_TOOLS_DIR}"
    mv "${tmp}" "${CLIENT_TOOLS_DIR}"
    trap - EXIT
    echo "client tools (openapi-typescript, typescript): installed in ${CLIENT_TOOLS_DIR}"
}

case "${1:-all}" in
    all)
        install_shellcheck
        install_pubsub_emulator
        install_firebase_tools
        install_client_tools
        ;;
    shellcheck) install_shellcheck ;;
    pubsub-emulator) install_pubsub_emulator ;;
    firebase-tools) install_firebase_tools ;;
    client-tools) install_client_tools ;;
    --firebase-tools-dir) echo "${FIREBASE_TOOLS_DIR}" ;;
    --client-tools-dir) echo "${CLIENT_TOOLS_DIR}" ;;
    -h | --help) sed -n '2,16s/^# \{0,1\}//p' "$0" ;;
    *)
        echo "usage: $0 [all|shellcheck|pubsub-emulator|firebase-tools|client-tools|--firebase-tools-dir|--client-tools-dir]" >&2
        exit 2
        ;;
esac
