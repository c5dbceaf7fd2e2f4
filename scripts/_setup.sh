# shellcheck shell=bash
# Shared setup for scripts/run and scripts/test: sourced from the repo root, never run.
# Every step is quick when there is nothing left to do.

# shellcheck disable=SC2034  # both are used by scripts/run and scripts/test
RUNTIME_PACKAGES=(libportaudio2 build-essential cmake git python3-venv python3-dev)
# shellcheck disable=SC2034
TEST_PACKAGES=(tmux pulseaudio libasound2-plugins espeak-ng sox lame util-linux ghostscript)
STAMP=.venv/.triptych-install-stamp
ACCEL_FILE=.venv/.triptych-accel  # what the installed bindings were built for (triptych gpu)

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

# pip install -e ".[EXTRAS]", skipped when the stamp says the same pyproject.toml,
# accelerator and build flags were installed before with these extras (or more).
# TRIPTYCH_SKIP_ENGINES=1 leaves out the engines extra (the native bindings).
# TRIPTYCH_GPU=cpu|cuda|vulkan|metal overrides the detection (tui/accel.py).
ensure_installed() {
  local extra want=()
  for extra in "$@"; do
    [[ $extra == engines && ${TRIPTYCH_SKIP_ENGINES:-} == 1 ]] || want+=("$extra")
  done
  local extras
  extras=$(IFS=,; echo "${want[*]}")

  # tui/accel.py asks NVML (nvidia-ml-py) which GPUs are here, before the project is installed.
  if ! .venv/bin/python -c 'import pynvml' 2>/dev/null; then
    .venv/bin/python -m pip install -q "nvidia-ml-py>=12.535"
  fi
  # "cuda 90", "vulkan", "metal" or "cpu"; why not a GPU build (no CUDA toolkit, a driver too
  # old for it, ...) is said on stderr, as one line. A bad TRIPTYCH_GPU ends here.
  local accel kind arch
  accel=$(.venv/bin/python -m tui.accel detect) || exit 1
  read -r kind arch <<<"$accel"

  local key old_key="" old_extras="" lacking=0
  key=$(.venv/bin/python -m tui.accel stamp-key --kind "$kind" --arch "$arch") || exit 1
  if [[ -f $STAMP ]]; then read -r old_key old_extras <"$STAMP" || true; fi
  if [[ $old_key == "$key" ]]; then
    for extra in "${want[@]}"; do [[ ,$old_extras, == *,$extra,* ]] || lacking=1; done
    if ((lacking == 0)); then return 0; fi
  fi

  # CMAKE_ARGS for a CPU build of llama-cpp-python (-DLLAVA_BUILD=OFF, no AMX on x86_64),
  # as shell-quoted KEY=VALUE lines.
  local cpu_env built=cpu note="" previous=cpu
  cpu_env=$(.venv/bin/python -m tui.accel env llama-cpp-python --kind cpu) || exit 1
  if [[ -f $ACCEL_FILE ]]; then read -r previous _ <"$ACCEL_FILE" || true; fi
  if [[ ,$extras, == *,engines,* ]]; then
    if [[ $kind != cpu ]]; then
      # Built into our own wheel cache (pip's cache would hand back a CPU wheel); a failed
      # build has said which log to read, and the CPU build goes ahead.
      local wheels_out wheels=()
      if wheels_out=$(.venv/bin/python -m tui.accel build-wheels --kind "$kind" --arch "$arch"); then
        mapfile -t wheels <<<"$wheels_out"
        if .venv/bin/python -m pip install -q --no-deps --force-reinstall "${wheels[@]}"; then
          built=$accel
        else
          say "installing the $accel wheels failed; using the CPU build"
          previous=$accel # some of them may be in: put the CPU ones back
        fi
      fi
      # Not retried on every start: the stamp below is the GPU one. triptych gpu shows this.
      if [[ $built == cpu ]]; then note=" ($accel build failed; delete $STAMP to retry)"; fi
    fi
    if [[ $built == cpu && $previous != cpu ]]; then
      # pip would keep the GPU build (same version); CPU wheels come from pip's cache.
      say "reinstalling the engine bindings for the CPU"
      local pins_out pins=()
      pins_out=$(.venv/bin/python -m tui.accel pins) || exit 1
      mapfile -t pins <<<"$pins_out"
      (set -a && eval "$cpu_env" && exec .venv/bin/python -m pip install --no-deps \
        --force-reinstall "${pins[@]}")
    elif [[ $built == cpu ]] &&
      ! .venv/bin/python -c 'import importlib.metadata as m; m.version("llama-cpp-python")' 2>/dev/null; then
      say "building llama-cpp-python from source (about 15-20 minutes on 2 cores, once; pip caches the wheel)"
    fi
  fi
  (set -a && eval "$cpu_env" && exec .venv/bin/python -m pip install -e ".${extras:+[$extras]}")
  if [[ ,$extras, == *,engines,* ]]; then echo "$built$note" >"$ACCEL_FILE"; fi
  echo "$key $extras" >"$STAMP"
}
