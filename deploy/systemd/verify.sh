#!/usr/bin/env bash
# Checks registry-redirect.service with `systemd-analyze verify`: its
# syntax, every directive's value, and that its commands are executable.
#
# Usage: deploy/systemd/verify.sh BINARY
#
# The unit runs /usr/local/bin/registry-redirect, which a build machine
# does not have, so the check runs on a copy of the unit that points at
# BINARY instead. Nothing is installed or started: this machine's systemd
# need not be running.
set -euo pipefail

if (($# != 1)); then
    printf 'usage: %s BINARY\n' "$0" >&2
    exit 2
fi
binary=$(realpath "$1")
if [[ ! -x "$binary" ]]; then
    printf 'verify.sh: %s is not an executable file; build it with cargo build first\n' "$binary" >&2
    exit 2
fi

unit="$(dirname "${BASH_SOURCE[0]}")/registry-redirect.service"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

sed "s|/usr/local/bin/registry-redirect|$binary|" "$unit" >"$scratch/registry-redirect.service"
# systemd-analyze exits non-zero on some problems but only warns of
# others, such as an invalid value that systemd would ignore, so any output
# counts as a failure.
status=0
output=$(systemd-analyze verify "$scratch/registry-redirect.service" 2>&1) || status=$?
if ((status != 0)) || [[ -n "$output" ]]; then
    printf '%s
' "$output"
    printf 'registry-redirect.service: systemd-analyze verify found problems (exit %d)
' "$status" >&2
    exit 1
fi
"$binary" --version >/dev/null
printf 'registry-redirect.service: verified\n'
