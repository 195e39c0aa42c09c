#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu). The only
# network use of the autograder: pip installs. torch comes as the CPU wheel: small and enough here.
set -euo pipefail
cd "$(dirname "$0")"
[ -f requirements.txt ] || cd /autograder/source
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends python3 python3-pip
fi
export PIP_BREAK_SYSTEM_PACKAGES=1  # newer Ubuntu images mark the system Python as externally managed
python3 -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch>=2.1"
python3 -m pip install --no-cache-dir -r requirements.txt
