#!/usr/bin/env bash
# System packages the test suite needs, installed by the project itself, never by hand: CI runs
# on a fresh Debian machine as root. Idempotent, and instant when everything is already there.
#
# The browser end-to-end test (tests/test_browser_e2e.py) drives Debian's Chromium headless.
# The local-engine tests speak with Debian's espeak-ng (a voice other than the local TTS).
# The shared voice store tests (tests/test_redis_voices.py) start Debian's redis-server
# themselves, on a free port (installing the package may also start Debian's own service on 6379;
# the tests do not use it).
# Nothing is downloaded besides Debian packages: no browser from a test tool's own site.
#
#   UNMUTE_SKIP_BROWSER_TESTS=1   skip the browser test (and the Chromium install) explicitly
#   UNMUTE_CHROMIUM=/path         use that Chromium binary instead of Debian's /usr/bin/chromium
set -euo pipefail

chromium="${UNMUTE_CHROMIUM:-/usr/bin/chromium}"
# espeak-ng speaks the test sentences; sox measures audio in the benchmarks; redis-server backs the
# shared voice store. Chromium, and a font
# so the page's screenshot shows text (the package only recommends fonts, which are not installed).
packages=(espeak-ng sox redis-server)
if [[ "${UNMUTE_SKIP_BROWSER_TESTS:-}" == "1" ]]; then
    echo "test-deps: UNMUTE_SKIP_BROWSER_TESTS=1: not installing Chromium; the browser test is skipped"
else
    packages+=(chromium fonts-dejavu-core)
fi

if [[ -n "${UNMUTE_CHROMIUM:-}" && ! -x "$chromium" ]]; then
    echo "test-deps: UNMUTE_CHROMIUM=$chromium is not an executable file" >&2
    exit 1
fi

missing=()
for package in "${packages[@]}"; do
    if [[ "$package" == chromium && -x "$chromium" ]]; then
        continue
    fi
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ "$(id -u)" != "0" ]]; then
    echo "test-deps: the tests need Debian packages: ${missing[*]}" >&2
    echo "test-deps: run 'sudo apt-get install -y --no-install-recommends ${packages[*]}'," >&2
    echo "test-deps: or set UNMUTE_SKIP_BROWSER_TESTS=1 to skip the browser test." >&2
    exit 1
fi

echo "test-deps: installing ${missing[*]} (Debian packages, for the browser, local-engine and Redis tests)"
export DEBIAN_FRONTEND=noninteractive
# A mirror can fail for a moment; three tries before giving up.
for attempt in 1 2 3; do
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    then
        break
    fi
    if [[ $attempt == 3 ]]; then
        echo "test-deps: could not install ${missing[*]} with apt-get" >&2
        exit 1
    fi
    echo "test-deps: apt-get failed (try $attempt of 3); retrying in 5 s" >&2
    sleep 5
done
if [[ " ${missing[*]} " == *" chromium "* ]]; then
    echo "test-deps: $("$chromium" --version 2>/dev/null || echo 'chromium installed')"
fi
