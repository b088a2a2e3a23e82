#!/usr/bin/env bash
# Build Herald's image with its OCI labels (version from herald/__init__.py, the git revision, the date).
#
#   scripts/build-image.sh                # tags herald:VERSION
#   scripts/build-image.sh my/herald:dev  # any tag; extra arguments go to `docker build`
#
# `--network host` lets the build reach PyPI on machines whose Docker has no bridge network.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' herald/__init__.py)"
tag="${1:-herald:$version}"
shift || true
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
exec docker build --network host \
  --build-arg VERSION="$version" \
  --build-arg REVISION="$revision" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$tag" "$@" .
