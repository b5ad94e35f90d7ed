#!/usr/bin/env bash
# System packages the test suite needs. Installed by the project itself, never by hand:
# CI runs on a fresh Debian machine as root. Nothing is needed yet beyond Python packages;
# later suites (browser end-to-end) add Debian packages here.
set -euo pipefail
exit 0
