# shellcheck shell=bash
# Shared setup for scripts/run and scripts/test: sourced from the repo root, never run.
# Every step is quick when there is nothing left to do.

# shellcheck disable=SC2034  # both are used by scripts/run and scripts/test
RUNTIME_PACKAGES=(libportaudio2 build-essential cmake git python3-venv python3-dev)
# shellcheck disable=SC2034
TEST_PACKAGES=(tmux pulseaudio libasound2-plugins espeak-ng sox lame util-linux ghostscript)
STAMP=.venv/.triptych-install-stamp

say() { printf 'triptych: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# Install the Debian packages that are missing (as root), or say how to (otherwise).
ensure_system_packages() {
  if ! command -v dpkg-query >/dev/null; then
    say "not a Debian system; make sure these are installed: $*"
    return 0
  fi
  local pkg missing=()
  for pkg in "$@"; do
    # shellcheck disable=SC2016  # ${db:Status-Status} is dpkg-query's format, not ours
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) == installed ]] ||
      missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then return 0; fi
  if [[ $(id -u) -ne 0 ]]; then
    die "missing system packages: ${missing[*]}. Install them with:
  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
  fi
  say "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Create .venv with python3 (>= 3.11) unless it is there already.
ensure_venv() {
  if [[ -x .venv/bin/pip ]]; then return 0; fi
  command -v python3 >/dev/null || die "python3 not found; Triptych needs Python >= 3.11"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "Triptych needs Python >= 3.11, but python3 is $(python3 -V 2>&1)"
  say "creating .venv"
  python3 -m venv --clear .venv
  .venv/bin/python -m pip install -q --upgrade pip
}

# pip install -e ".[EXTRAS]", skipped when the stamp says the same pyproject.toml and
# CMAKE_ARGS were installed before with these extras (or more).
# TRIPTYCH_SKIP_ENGINES=1 leaves out the engines extra (llama-cpp-python).
ensure_installed() {
  local extra want=()
  for extra in "$@"; do
    [[ $extra == engines && ${TRIPTYCH_SKIP_ENGINES:-} == 1 ]] || want+=("$extra")
  done
  local extras
  extras=$(IFS=,; echo "${want[*]}")

  # llama-cpp-python builds from source. CMAKE_ARGS is split like a shell line (shlex),
  # so the quotes keep each flag list one value. ggml's AMX kernels crash on some Xeons/VMs.
  local flags=-DLLAVA_BUILD=OFF
  if [[ $(uname -m) == x86_64 ]]; then
    local no_amx='-mno-amx-int8 -mno-amx-tile -mno-amx-bf16'
    flags+=" \"-DCMAKE_C_FLAGS=$no_amx\" \"-DCMAKE_CXX_FLAGS=$no_amx\""
  fi
  local cmake_args="${CMAKE_ARGS:+$CMAKE_ARGS }$flags"

  local key old_key="" old_extras="" lacking=0
  key=$({ cat pyproject.toml; echo "$cmake_args"; } | sha256sum | cut -d' ' -f1)
  if [[ -f $STAMP ]]; then read -r old_key old_extras <"$STAMP" || true; fi
  if [[ $old_key == "$key" ]]; then
    for extra in "${want[@]}"; do [[ ,$old_extras, == *,$extra,* ]] || lacking=1; done
    if ((lacking == 0)); then return 0; fi
  fi

  if [[ ,$extras, == *,engines,* ]] &&
    ! .venv/bin/python -c 'import importlib.metadata as m; m.version("llama-cpp-python")' 2>/dev/null; then
    say "building llama-cpp-python from source (about 15-20 minutes on 2 cores, once; pip caches the wheel)"
  fi
  CMAKE_ARGS=$cmake_args .venv/bin/python -m pip install -e ".${extras:+[$extras]}"
  echo "$key $extras" >"$STAMP"
}
