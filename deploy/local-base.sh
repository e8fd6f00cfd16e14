#!/usr/bin/env bash
# Build a base image for deploy/Dockerfile from Debian packages, for machines that
# cannot pull python:3.12-slim (no registry access): Debian 12 with its Python 3.11,
# venv, `python` and the CA certificates. About 30 s and 220 MB on a 2-core machine.
#
#   deploy/local-base.sh [IMAGE]          # default localhost/bighub-siem-base:bookworm
#   podman build --build-arg BASE_IMAGE=localhost/bighub-siem-base:bookworm \
#     -f deploy/Dockerfile -t bighub-siem .
#
# Needs mmdebstrap and podman or buildah (Debian packages), root or a user namespace,
# and a Debian mirror (the host's apt sources; MIRROR=URL to choose another).
set -euo pipefail

image="${1:-localhost/bighub-siem-base:bookworm}"
suite="${SUITE:-bookworm}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

mmdebstrap --variant=minbase \
  --include=python3,python3-venv,python-is-python3,ca-certificates \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  "$suite" "$tmp/base.tar" ${MIRROR:+"$MIRROR"}

if command -v podman >/dev/null 2>&1; then
  podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    "$tmp/base.tar" "$image" >/dev/null
elif command -v buildah >/dev/null 2>&1; then
  container="$(buildah from scratch)"
  buildah add "$container" "$tmp/base.tar" / >/dev/null
  buildah config --env LANG=C.UTF-8 --cmd /bin/bash "$container"
  buildah commit --rm "$container" "$image" >/dev/null
else
  echo "local-base.sh: neither podman nor buildah is installed" >&2
  exit 1
fi
echo "$image"
