#!/usr/bin/env bash
# The system tools that the test suites drive, from Debian packages. `make test`, `make e2e`
# and .ci/run run this first:
#
#   scripts/system-tools.sh test   tinyproxy (tests/transport's forward proxy), redis-server and
#                                  redis-cli (Cluster and Sentinel topologies), promtool (checks
#                                  the metrics page, alert rules and dashboard queries),
#                                  chromium (tests/console drives it with Playwright)
#   scripts/system-tools.sh e2e    nginx (tests/e2e, in front of gateway processes)
#
# What is missing is installed when run as root (apt-get); otherwise it stops at once, naming
# the one command that installs it.
set -euo pipefail

# tool:package, per suite
tools_of() {
    case "$1" in
        test) echo "tinyproxy:tinyproxy-bin redis-server:redis-server redis-cli:redis-tools promtool:prometheus chromium:chromium" ;;
        e2e) echo "nginx:nginx" ;;
        *) echo "system-tools: unknown suite '$1' (expected: test, e2e)" >&2; exit 2 ;;
    esac
}

missing_packages() {
    local suite pair packages=()
    for suite in "$@"; do
        for pair in $(tools_of "$suite"); do
            # nginx lives in /usr/sbin, which a plain user's PATH may lack.
            if ! PATH="$PATH:/usr/sbin:/sbin" command -v "${pair%%:*}" >/dev/null 2>&1; then
                packages+=("${pair#*:}")
            fi
        done
    done
    echo "${packages[@]}"
}

suites=("${@:-test}")
read -r -a missing <<<"$(missing_packages "${suites[@]}")"
[ "${#missing[@]}" -eq 0 ] && exit 0

install=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -ne 0 ]; then
    echo "system-tools: the tests need ${missing[*]} (Debian packages); install them with:" >&2
    echo "    sudo ${install[*]}" >&2
    exit 1
fi
echo "system-tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet: update once, only if the first try fails.
if ! { timeout 300 "${install[@]}" || { timeout 300 apt-get update && timeout 300 "${install[@]}"; }; } >/dev/null 2>&1; then
    echo "system-tools: apt-get could not install ${missing[*]}" >&2
    exit 1
fi
read -r -a still <<<"$(missing_packages "${suites[@]}")"
if [ "${#still[@]}" -ne 0 ]; then
    echo "system-tools: installed, yet still missing the tools of ${still[*]}" >&2
    exit 1
fi
