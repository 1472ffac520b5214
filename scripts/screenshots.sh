#!/usr/bin/env bash
# Screenshots of the demo's migration board and HTML report for the README (docs/img/), taken
# by headless Chromium from the pages `make demo` just wrote. Skipped when Chromium is missing
# (`make test` installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  echo "screenshots: chromium not installed; skipped (scripts/setup.sh test installs it)" >&2
  exit 0
fi
mkdir -p docs/img
shot() {  # shot PAGE PNG HEIGHT
  chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars --no-first-run \
    --window-size=1280,"$3" --screenshot="$2" "file://$PWD/$1" >/dev/null 2>&1
}
shot site/index.html docs/img/board.png 620
shot site/checks/daily-revenue.html docs/img/board-check.png 900
shot demo-report.html docs/img/report.png 1000
echo "screenshots: docs/img/board.png, docs/img/board-check.png, docs/img/report.png"
