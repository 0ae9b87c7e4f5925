#!/usr/bin/env bash
# Regenerates the committed generated code (protobuf-es output and drizzle migrations) and fails
# when that changes anything, so a .proto or schema edit without regeneration cannot land.
set -euo pipefail
cd "$(dirname "$0")/.."
npx buf lint
npx buf generate
npx drizzle-kit generate >/dev/null
npx drizzle-kit check
if ! git diff --exit-code --stat -- proto/gen drizzle || [ -n "$(git status --porcelain --untracked-files=all -- proto/gen drizzle)" ]; then
  echo "check:generated: generated code is out of date; run 'npm run generate' and commit the result." >&2
  git status --porcelain -- proto/gen drizzle >&2
  exit 1
fi
# The dashboard's bundle (edge/dashboard/public) is committed too: rebuild it and compare.
node --import tsx scripts/build-dashboard.ts >/dev/null
if ! git diff --exit-code --stat -- edge/dashboard/public || [ -n "$(git status --porcelain --untracked-files=all -- edge/dashboard/public)" ]; then
  echo "check:generated: the dashboard bundle is out of date; run 'npm run build:dashboard' and commit the result." >&2
  exit 1
fi
echo "check:generated: proto/gen, drizzle/ and the dashboard bundle are up to date."
