#!/usr/bin/env bash
# Rebuilds the console's vendored files from the lockfile in src/console/vendor: protobufjs's
# browser build (the page encodes and decodes our protos with it) and uPlot (the charts). The
# copies are committed: the broker embeds them, so building it needs no Node.js. Run this after
# changing a version in src/console/vendor/package.json.
set -euo pipefail
cd "$(dirname "$0")/../src/console/vendor"
npm ci --no-audit --no-fund --loglevel=error
out=../assets
cp node_modules/protobufjs/dist/protobuf.min.js "$out/protobuf.min.js"
cp node_modules/protobufjs/LICENSE "$out/protobuf.LICENSE"
cp node_modules/uplot/dist/uPlot.iife.min.js "$out/uPlot.min.js"
cp node_modules/uplot/dist/uPlot.min.css "$out/uPlot.min.css"
cp node_modules/uplot/LICENSE "$out/uPlot.LICENSE"
echo "vendored protobufjs $(node -p 'require("protobufjs/package.json").version')" \
  "and uPlot $(node -p 'require("uplot/package.json").version') into src/console/assets"
