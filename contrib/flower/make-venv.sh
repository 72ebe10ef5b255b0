#!/usr/bin/env bash
# Build the virtual environment that flower-supernode runs from (README, "Flower").
#
#   contrib/flower/make-venv.sh [DIR] [FLWR_SPEC]
#
# DIR defaults to .venv-flower; FLWR_SPEC to flwr==1.42.0 (pin it to the SuperLink's major.minor).
# It is a separate environment on purpose: flwr 1.42 needs protobuf < 7, syftd needs protobuf >= 7.
# numpy is there for the example apps (examples/flower); add what your federation's ClientApp imports.
# Idempotent: a finished build leaves DIR/.flower-installed holding the spec it was built for.
set -euo pipefail
dir=${1:-.venv-flower}
spec=${2:-${FLWR_SPEC:-flwr==1.42.0}}
python=${FLOWER_PYTHON:-python3}
stamp="$dir/.flower-installed"
want="$spec numpy"
if [[ -f $stamp && $(cat "$stamp") == "$want" && -x $dir/bin/flower-supernode ]]; then
  echo "flower venv $dir is up to date ($want)"; exit 0
fi
start=$(date +%s)
test -x "$dir/bin/python" || "$python" -m venv "$dir"
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$spec" 'numpy>=1.26'
"$dir/bin/flower-supernode" --help >/dev/null
echo "$want" > "$stamp"
echo "flower venv $dir built in $(( $(date +%s) - start )) s ($want)"
