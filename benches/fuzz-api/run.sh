#!/usr/bin/env bash
# `just fuzz-api`: sets up a virtualenv with the pinned schemathesis
# (target/fuzz-api/venv, rebuilt when requirements.txt changes), then runs
# run.py, which starts orchexd on loopback and fuzzes its API.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/fuzz-api/venv"
stamp="$venv/.requirements"

if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$here/requirements.txt" "$stamp"; then
    echo "fuzz-api: installing $here/requirements.txt into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi

exec "$venv/bin/python" "$here/run.py" "$@"
