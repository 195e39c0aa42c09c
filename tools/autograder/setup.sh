#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu). The only
# network use of the autograder: pip installs. torch and torchvision come as CPU wheels (small, and
# enough here); then everything the student's requirements.txt lists, so that any import a student
# may use (tqdm, numpy, ...) works; then what grade.py itself needs.
set -euo pipefail
cd "$(dirname "$0")"
[ -f requirements.txt ] || cd /autograder/source
PYTHON="${AUTOGRADER_PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null || ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  apt-get update
  apt-get install -y --no-install-recommends python3 python3-pip
fi
export PIP_BREAK_SYSTEM_PACKAGES=1  # newer Ubuntu images mark the system Python as externally managed
"$PYTHON" -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch>=2.3" "torchvision>=0.18"
"$PYTHON" -m pip install --no-cache-dir -r student_requirements.txt -r requirements.txt
