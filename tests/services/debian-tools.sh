#!/usr/bin/env bash
# Make sure the commands the tests need are installed, from Debian packages:
#   bash tests/services/debian-tools.sh COMMAND:PACKAGE ...
# e.g. promtool:prometheus. Installs what is missing when we are root on Debian; under
# CI=true a command that is still missing fails the run, elsewhere its tests skip.
set -uo pipefail

missing=()
packages=()
for pair in "$@"; do
  command="${pair%%:*}"
  package="${pair#*:}"
  if ! command -v "$command" >/dev/null 2>&1; then
    missing+=("$command")
    packages+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "debian-tools.sh: installing ${packages[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

status=0
for command in "${missing[@]}"; do
  if ! command -v "$command" >/dev/null 2>&1; then
    echo "debian-tools.sh: $command is not installed" >&2
    status=1
  fi
done
if [ $status -ne 0 ] && [ "${CI:-}" = "true" ]; then
  exit 1
fi
exit 0
