#!/usr/bin/env bash
# Placeholder demo until the controller and agent land: validate the example manifests.
set -euo pipefail
cd "$(dirname "$0")/.."
./build/bin/upkeepctl validate -f manifests/
