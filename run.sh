#!/usr/bin/env bash
# The project's one entry point. Sets itself up on first use (a venv in .venv, the package and its
# test tools, and on Debian/Ubuntu the offline Fashion-MNIST package), then runs what you ask:
#   ./run.sh demo        the main job: the fast reproduction of the classification experiments
#                        (qevo reproduce --profile fast; JSON, Markdown table and figures in results/reproduce-fast)
#   ./run.sh test        the whole test suite: unit tests, grading, the Colab path, the browser test, and
#                        every notebook executed by nbval
#   ./run.sh test-oldest the same tests in .venv-oldest, where every runtime dependency is at its lower bound in
#                        pyproject.toml (scripts/oldest_versions.py); numbers in checked notebook outputs are masked
#                        (tests/nbval_mask_numbers.cfg), the notebooks' asserts still hold; not part of CI
#   ./run.sh notebooks   rebuild notebooks/*.ipynb from notebooks/src/ and execute them (fast profile)
#   ./run.sh qevo ...    any other qevo command, e.g. ./run.sh qevo bench
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }

# setup VENV PIP_ARGS...: make VENV (once), install the package into it with PIP_ARGS (again whenever
# pyproject.toml changed), fetch the offline dataset, and put VENV/bin first on PATH.
setup() {
  local venv=$1; shift
  if [ ! -x "$venv/bin/python" ]; then
    if ! "$PY" -m venv "$venv" 2>/dev/null; then
      echo "python3 -m venv failed; installing python3-venv with apt" >&2
      as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv
      rm -rf "$venv" && "$PY" -m venv "$venv"
    fi
  fi
  if [ ! -f "$venv/.installed" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "$@"
    touch "$venv/.installed"
  fi
  if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
    echo "installing Debian's dataset-fashion-mnist (the offline copy of Fashion-MNIST)" >&2
    as_root apt-get install -y -qq dataset-fashion-mnist || as_root sh -c 'apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist' \
      || echo "could not install dataset-fashion-mnist: Fashion-MNIST will be downloaded if online" >&2
  fi
  export PATH="$PWD/$venv/bin:$PATH"
}

browser() {   # the widget test drives Debian's chromium (Playwright's own browser download is not used)
  if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium (for tests/test_browser_widgets.py)" >&2
    as_root apt-get install -y -qq chromium || as_root sh -c 'apt-get update -qq && apt-get install -y -qq chromium' \
      || echo "could not install chromium: the browser test will be skipped" >&2
  fi
}

cmd=${1:-demo}; shift || true
if [ "$cmd" = test-oldest ]; then   # pip constraints: every runtime dependency pinned to its lower bound
  mkdir -p .venv-oldest && "$PY" scripts/oldest_versions.py > .venv-oldest/constraints.txt
  setup .venv-oldest -c .venv-oldest/constraints.txt -e ".[test]"
else
  setup .venv -e ".[test,crosscheck,classroom]"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
case "$cmd" in
  demo)      qevo reproduce --profile fast --out results/reproduce-fast "$@" ;;
  test)      browser; python -m pytest -q --nbval-lax --durations=15 tests notebooks/*.ipynb "$@" ;;
  test-oldest) echo "runtime dependencies at their lower bounds ($(tr '\n' ' ' < .venv-oldest/constraints.txt))" >&2
             python -m pytest -q --nbval-lax --nbval-sanitize-with tests/nbval_mask_numbers.cfg --durations=15 \
               tests notebooks/*.ipynb "$@" ;;
  notebooks) python scripts/notebooks.py build "$@" && QEVO_PROFILE=fast python scripts/notebooks.py execute "$@" ;;
  qevo)      qevo "$@" ;;
  *) echo "usage: ./run.sh demo|test|test-oldest|notebooks|qevo ..." >&2; exit 2 ;;
esac
