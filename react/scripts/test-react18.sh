#!/usr/bin/env bash
# Typecheck and run the test suite against React 18 instead of the React 19 the
# package is developed with. Works on a copy so node_modules here is untouched.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The package depends on ../recovery (herald-channels-recovery, built): keep that relative path valid.
work="$tmp/react"
mkdir "$work"
ln -s "$here/../recovery" "$tmp/recovery"
cp -r "$here"/src "$here"/test "$here"/package.json "$here"/package-lock.json \
  "$here"/tsconfig.json "$here"/tsup.config.ts "$here"/vitest.config.ts "$work"/
cd "$work"
npm ci --no-audit --no-fund --loglevel=error
npm install --no-audit --no-fund --loglevel=error --no-save \
  react@18.3.1 react-dom@18.3.1 @types/react@18.3.28 @types/react-dom@18.3.7
node -e "const v = require('react/package.json').version; console.log('React', v); if (!v.startsWith('18.')) process.exit(1)"
npx tsc --noEmit
npx vitest run
