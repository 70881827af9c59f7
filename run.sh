#!/usr/bin/env bash
# The project's one entry point. Sets itself up on first use (a venv in .venv, the package and its
# test tools at the versions in requirements/test.lock, and on Debian/Ubuntu the offline Fashion-MNIST package),
# then runs what you ask:
#   ./run.sh demo        the main job: every task with every method (RTN, GPTQ, AdaRound, BRECQ, the ES) once at
#                        its headline width, one seed, one model per task (qevo reproduce --profile demo; JSON,
#                        Markdown tables and figures in results/reproduce-demo); the whole grid (all widths,
#                        3 seeds, both models): ./run.sh demo --profile fast (results/reproduce-fast). It installs
#                        the package alone (no extras: a first run from a clean clone installs about 40 s
#                        sooner); the other commands add the extras (Ray for --workers, ONNX export, test tools)
#   ./run.sh test        the whole test suite (what CI runs): unit tests, grading, the Colab path, the browser test,
#                        and every notebook executed by nbval, in .venv with every package at its locked version
#   ./run.sh test-oldest the same tests in .venv-oldest, where every runtime dependency is at its lower bound in
#                        pyproject.toml (scripts/dependency_versions.py oldest); numbers in checked notebook outputs
#                        are masked (tests/nbval_mask_numbers.cfg), the notebooks' asserts still hold; not part of CI
#   ./run.sh test-newest the same tests in .venv-newest, with the newest versions the index offers, past the project's
#                        own caps (scripts/dependency_versions.py capped) too: finds the next break on purpose; not CI
#   ./run.sh lock        update requirements/test.lock after pyproject.toml changed (pip-compile, from pyproject.toml and
#                        requirements/torch-cap.txt; keeps the pins that still satisfy it); ./run.sh lock --upgrade
#                        moves every pin to the newest version the index offers
#   ./run.sh notebooks   rebuild notebooks/*.ipynb from notebooks/src/ and execute them (fast profile)
#   ./run.sh qevo ...    any other qevo command, e.g. ./run.sh qevo bench
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }

# apt_install PACKAGE WHY: install one Debian package, printing one line (apt's own output goes to a log).
apt_install() {
  local log=${TMPDIR:-/tmp}/qevo-apt-$1.log
  echo "installing Debian's $1 ($2) ..." >&2
  if as_root apt-get install -y -q "$1" >"$log" 2>&1 \
     || as_root sh -c "apt-get update -q && apt-get install -y -q $1" >>"$log" 2>&1; then
    echo "installed Debian's $1" >&2
  else
    echo "could not install Debian's $1 (apt's output: $log)" >&2; return 1
  fi
}

# fresh MARKER: MARKER exists and is newer than pyproject.toml and the lock.
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ] && [ ! requirements/test.lock -nt "$1" ]; }

# setup VENV WANT PIP_ARGS...: make VENV (once), install the package into it with PIP_ARGS (again whenever
# pyproject.toml or the lock changed), fetch the offline dataset, and put VENV/bin first on PATH. WANT names
# what PIP_ARGS install, "core" (the package alone) or "all" (with its extras); a venv with "all" serves "core".
# pip compiles bytecode one file at a time; compileall does it on every core.
setup() {
  local venv=$1 want=$2; shift 2
  if [ ! -x "$venv/bin/python" ]; then
    if ! "$PY" -m venv "$venv" 2>/dev/null; then
      apt_install python3-venv "python3 -m venv failed without it"
      rm -rf "$venv" && "$PY" -m venv "$venv"
    fi
  fi
  if ! fresh "$venv/.installed-all" && { [ "$want" = all ] || ! fresh "$venv/.installed-core"; }; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q --no-compile "$@"
    "$venv/bin/python" -m compileall -qq -j 0 "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
    touch "$venv/.installed-$want"
  fi
  if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
    apt_install dataset-fashion-mnist "the offline copy of Fashion-MNIST" \
      || echo "Fashion-MNIST will be downloaded if online" >&2
  fi
  export PATH="$PWD/$venv/bin:$PATH"
}

browser() {   # the widget test drives Debian's chromium (Playwright's own browser download is not used)
  if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
    apt_install chromium "for tests/test_browser_widgets.py" || echo "the browser test will be skipped" >&2
  fi
}

EXTRAS=".[test,crosscheck,classroom,export,grid]"
PYTEST=(python -m pytest -q --nbval-lax --durations=15 tests notebooks/*.ipynb)
cmd=${1:-demo}; shift || true
case "$cmd" in
  test-oldest)   # pip constraints: every runtime dependency pinned to its lower bound
    mkdir -p .venv-oldest && "$PY" scripts/dependency_versions.py oldest > .venv-oldest/constraints.txt
    setup .venv-oldest all -c .venv-oldest/constraints.txt -e ".[test]" ;;
  test-newest)   # no lock: the newest versions the index offers, then past our own caps
    rm -f .venv-newest/.installed-*   # upgrade on every run
    setup .venv-newest all --upgrade --upgrade-strategy eager -e "$EXTRAS"
    capped=$("$PY" scripts/dependency_versions.py capped)
    if [ -n "$capped" ]; then
      echo "lifting pyproject's caps to try the newest: $(echo $capped)" >&2
      python -m pip install -q --upgrade $capped   # pip then warns that qevo-lite asks for less: expected
    fi ;;
  lock)          # pip-compile in its own venv; resolves with pip, so it sees the same index and disk as pip
    [ -x .venv-lock/bin/pip-compile ] || { "$PY" -m venv .venv-lock && .venv-lock/bin/python -m pip install -q --upgrade pip pip-tools; }
    CUSTOM_COMPILE_COMMAND="./run.sh lock" .venv-lock/bin/pip-compile -q --extra test --extra crosscheck \
      --extra classroom --extra export --extra grid --strip-extras --no-emit-index-url --no-emit-find-links -c requirements/torch-cap.txt \
      -o requirements/test.lock pyproject.toml "$@"
    echo "requirements/test.lock refreshed: run ./run.sh test before committing it" >&2; exit 0 ;;
  demo) setup .venv core -c requirements/test.lock -e . ;;
  *) setup .venv all -c requirements/test.lock -e "$EXTRAS" ;;
esac
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
case "$cmd" in
  demo)      qevo reproduce --profile demo "$@" ;;
  test)      browser; "${PYTEST[@]}" "$@" ;;
  test-newest) browser
             echo "newest versions: $(python -m pip list --format=freeze 2>/dev/null | grep -iE '^(torch|torchvision|numpy|brevitas|accelerate|matplotlib|torchmetrics)==' | tr '\n' ' ')" >&2
             "${PYTEST[@]}" "$@" ;;
  test-oldest) echo "runtime dependencies at their lower bounds ($(tr '\n' ' ' < .venv-oldest/constraints.txt))" >&2
             "${PYTEST[@]}" --nbval-sanitize-with tests/nbval_mask_numbers.cfg "$@" ;;
  notebooks) python scripts/notebooks.py build "$@" && QEVO_PROFILE=fast python scripts/notebooks.py execute "$@" ;;
  qevo)      qevo "$@" ;;
  *) echo "usage: ./run.sh demo|test|test-oldest|test-newest|lock|notebooks|qevo ..." >&2; exit 2 ;;
esac
