#!/usr/bin/env bash
# The project's Python environment, .venv: Debian's python3 with its torch (python3-torch, the
# numeric oracle) plus, from PyPI, transformers for the Hugging Face export test and tensorboard
# for the event-file test (TensorBoard's own reader). Re-running it is cheap once it is in place.
# Without network it says so and exits 0: the tests that need these packages are then skipped
# with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
# Pinned; transformers checked against Debian's torch 1.13, tensorboard (and the protobuf it
# reads event files with) against Debian's Python 3.11 and numpy.
pins=(transformers==4.46.3 tensorboard==2.20.0 protobuf==7.36.2)

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import transformers, tensorboard, torch' 2>/dev/null; then
  echo "python-env: $venv ready ($("$venv/bin/python" -c 'import transformers, tensorboard; print("transformers", transformers.__version__, "tensorboard", tensorboard.__version__)'))"
  exit 0
fi
if [ ! -x "$venv/bin/python" ] && ! /usr/bin/python3 -m venv --system-site-packages "$venv"; then
  echo "python-env: warning: could not make $venv (install python3-venv); the Hugging Face export and TensorBoard tests will be skipped" >&2
  exit 0
fi
if "$venv/bin/pip" install --disable-pip-version-check --quiet --timeout 60 --retries 2 "${pins[@]}"; then
  echo "python-env: installed ${pins[*]} into $venv"
else
  echo "python-env: warning: could not install ${pins[*]} from PyPI; the Hugging Face export and TensorBoard tests will be skipped" >&2
fi
