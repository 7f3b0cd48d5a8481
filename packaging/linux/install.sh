#!/usr/bin/env bash
# LoRA Studio installer for Linux (and, through packaging/macos/install.sh, Apple-silicon Macs).
#
# Creates an app-local Python environment under a prefix, installs the torch build that suits the GPU
# it finds (the decision lives in lora_studio/install_plan.py, which the tests run), installs the app,
# and adds a `lora-studio` command and a desktop entry. Run it again to repair or update: a run that was
# interrupted leaves a marker, and the next run rebuilds the environment. Nothing outside the prefix is
# touched except the launcher, the desktop entry and its icon, all of which --uninstall removes.
#
#   bash packaging/linux/install.sh [--prefix DIR] [--bin-dir DIR] [--wheel FILE] [--torch-build TAG]
#   bash packaging/linux/install.sh --dry-run      # print the plan, change nothing
#   bash packaging/linux/install.sh --uninstall    # remove everything the installer made
#
# Environment: LORA_STUDIO_TORCH_BUILD (cpu, mps, cu118, cu126, cu128, cu130) overrides the GPU detection;
# LORA_STUDIO_TORCH_INDEX (a URL, or "default" for the tool's configured index) and LORA_STUDIO_TORCH_SPEC
# (e.g. torch==2.13.0) override where torch comes from; LORA_STUDIO_FIND_LINKS names local wheel folders;
# LORA_STUDIO_PYTHON picks the Python that runs the installer; LORA_STUDIO_NO_UV=1 uses venv + pip instead
# of uv; UV_CACHE_DIR moves uv's download cache (default: inside the prefix, so --uninstall leaves nothing);
# LORA_STUDIO_SYSTEM_PACKAGES (ask, yes, no) says whether the system libraries Qt's window needs are installed
# with apt-get when missing (ask: as root it installs, on a terminal it asks before using sudo, else it names them).
set -euo pipefail

say() { printf '%s\n' "$*"; }
step() { printf '==> [%3ss] %s\n' "$SECONDS" "$*"; }
die() { printf 'error: %s\n' "$1" >&2; [ -n "${2:-}" ] && printf 'what to do: %s\n' "$2" >&2; exit 1; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
PREFIX="${LORA_STUDIO_PREFIX:-$DATA_HOME/lora-studio}"
BIN_DIR="${LORA_STUDIO_BIN_DIR:-$HOME/.local/bin}"
MODE=install
WHEEL=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="${2:?--prefix needs a folder}"; shift 2 ;;
    --prefix=*) PREFIX="${1#*=}"; shift ;;
    --bin-dir) BIN_DIR="${2:?--bin-dir needs a folder}"; shift 2 ;;
    --bin-dir=*) BIN_DIR="${1#*=}"; shift ;;
    --wheel) WHEEL="${2:?--wheel needs a file}"; shift 2 ;;
    --wheel=*) WHEEL="${1#*=}"; shift ;;
    --torch-build) export LORA_STUDIO_TORCH_BUILD="${2:?--torch-build needs a tag}"; shift 2 ;;
    --torch-build=*) export LORA_STUDIO_TORCH_BUILD="${1#*=}"; shift ;;
    --dry-run) MODE=dry-run; shift ;;
    --uninstall) MODE=uninstall; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown option: $1" "run with --help to see the options." ;;
  esac
done
mkdir_parent="$(dirname "$PREFIX")"
PREFIX="$(cd "$mkdir_parent" 2>/dev/null && pwd || printf '%s' "$mkdir_parent")/$(basename "$PREFIX")"
ENV_DIR="$PREFIX/env"
RECORD="$PREFIX/install.json"
MARKER="$PREFIX/.install-incomplete"
LAUNCHER="$BIN_DIR/lora-studio"
case "$(uname -s)" in
  Darwin) DESKTOP_FILE="$HOME/Applications/LoRA Studio.app"; ICON_FILE="" ;;
  *) DESKTOP_FILE="$DATA_HOME/applications/lora-studio.desktop"
     ICON_FILE="$DATA_HOME/icons/hicolor/scalable/apps/lora-studio.svg" ;;
esac
OWNED_TAG="made by the LoRA Studio installer"

# --- uninstall: only what carries our tag, then the prefix (only if it is ours) -------------------------
remove_empty_parents() {  # rmdir the empty folders above $1, stopping at $HOME
  local d; d="$(dirname "$1")"
  while [ "$d" != "$HOME" ] && [ "$d" != "/" ] && [ -d "$d" ] && rmdir "$d" 2>/dev/null; do d="$(dirname "$d")"; done
}
if [ "$MODE" = uninstall ]; then
  if [ -e "$PREFIX" ] && [ ! -f "$RECORD" ] && [ ! -f "$MARKER" ]; then
    die "$PREFIX does not look like a LoRA Studio install (no install.json); leaving it alone." \
        "pass the --prefix you installed to."
  fi
  for f in "$LAUNCHER" "$DESKTOP_FILE" "$ICON_FILE"; do
    [ -n "$f" ] || continue
    if [ -f "$f" ] && grep -q "$OWNED_TAG" "$f" 2>/dev/null || [ -f "$f/Contents/MacOS/lora-studio" ]; then
      rm -rf "$f"; say "removed $f"; remove_empty_parents "$f"
    fi
  done
  if [ -d "$PREFIX" ]; then rm -rf "$PREFIX"; say "removed $PREFIX"; remove_empty_parents "$PREFIX"; fi
  say "LoRA Studio is uninstalled. Your datasets, models and trained LoRAs (wherever you saved them) are kept."
  exit 0
fi

# --- what to install: the app wheel and the decision code inside it ----------------------------------
PY="${LORA_STUDIO_PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3 python; do command -v "$c" >/dev/null 2>&1 && { PY="$(command -v "$c")"; break; }; done
fi
[ -n "$PY" ] || die "no python3 found." "install Python 3 from your distribution (e.g. 'sudo apt install python3')."
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || die "$PY is older than Python 3.9." "install a newer python3, or point LORA_STUDIO_PYTHON at one."

SRC=""
if [ -z "$WHEEL" ]; then
  if [ -f "$HERE/../../pyproject.toml" ] && [ -f "$HERE/../../lora_studio/install_plan.py" ]; then
    SRC="$(cd "$HERE/../.." && pwd)"
  else
    WHEEL="$(ls -t "$HERE"/lora_studio-*.whl "$HERE"/../../dist/lora_studio-*.whl 2>/dev/null | head -n 1 || true)"
    [ -n "$WHEEL" ] || die "found neither the LoRA Studio source tree nor a lora_studio-*.whl next to this script." \
                           "pass --wheel FILE, or run the script from the unpacked source folder."
  fi
fi
if [ -n "$WHEEL" ]; then
  [ -f "$WHEEL" ] || die "no such wheel: $WHEEL" "check the path given to --wheel."
  WHEEL="$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")"
fi
plan_tool() {  # the decision code, from the source tree or straight out of the wheel (zipimport)
  if [ -n "$SRC" ]; then "$PY" "$SRC/lora_studio/install_plan.py" "$@"
  else PYTHONPATH="$WHEEL" "$PY" -m lora_studio.install_plan "$@"; fi
}
PLAN_SH="$(plan_tool plan --shell)" || die "could not decide which torch build to install." \
  "set LORA_STUDIO_TORCH_BUILD=cpu (or cu126, cu130) to choose yourself."
eval "$PLAN_SH"

find_uv() {
  if [ -n "${LORA_STUDIO_UV:-}" ]; then printf '%s' "$LORA_STUDIO_UV"
  elif [ -x "$PREFIX/tools/bin/uv" ]; then printf '%s' "$PREFIX/tools/bin/uv"
  elif command -v uv >/dev/null 2>&1; then command -v uv
  fi
}
UV="$(find_uv)"

if [ "$MODE" = dry-run ]; then
  say "LoRA Studio install plan (dry run: nothing is changed)"
  plan_tool plan --text
  say "app         : ${WHEEL:-build a wheel from $SRC}"
  say "tool        : ${UV:-uv from PyPI (pip install uv), else python -m venv + pip}"
  say "prefix      : $PREFIX"
  say "environment : $ENV_DIR"
  say "command     : $LAUNCHER"
  say "desktop     : $DESKTOP_FILE${ICON_FILE:+ (icon $ICON_FILE)}"
  [ -f "$MARKER" ] && say "repair      : an earlier install was interrupted; the environment would be rebuilt"
  [ -f "$RECORD" ] && [ ! -f "$MARKER" ] && say "existing    : installed already ($RECORD); a run updates it in place"
  exit 0
fi

# --- install -------------------------------------------------------------------------------------------
mkdir -p "$PREFIX"
if [ -f "$MARKER" ]; then
  step "An earlier install was interrupted: rebuilding the environment"
  rm -rf "$ENV_DIR" "$PREFIX/build"
  rm -f "$RECORD"
fi
: > "$MARKER"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$PREFIX/cache/uv}"
export UV_PYTHON_INSTALL_DIR="${UV_PYTHON_INSTALL_DIR:-$PREFIX/python}"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$PREFIX/cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -n "${LORA_STUDIO_FIND_LINKS:-}" ] && export UV_FIND_LINKS="${UV_FIND_LINKS:-${LORA_STUDIO_FIND_LINKS// /,}}"

if [ -n "${LORA_STUDIO_NO_UV:-}" ]; then
  UV=""
elif [ -z "$UV" ]; then
  step "Getting uv (the package installer) from PyPI"
  if "$PY" -m pip install -q --no-cache-dir --target "$PREFIX/tools" uv >/dev/null 2>&1 \
     && "$PREFIX/tools/bin/uv" --version >/dev/null 2>&1; then
    UV="$PREFIX/tools/bin/uv"
  else
    rm -rf "$PREFIX/tools"
    say "uv is not available; using python -m venv and pip (slower)."
  fi
fi
ENV_PY="$ENV_DIR/bin/python"
pkg_install() {  # pkg_install ARGS... : install into the app environment with uv, or pip
  if [ -n "$UV" ]; then "$UV" pip install -q --python "$ENV_PY" "$@"
  else "$ENV_PY" -m pip install -q "$@"; fi
}

old() {  # a value from the previous install record ("" if none)
  [ -f "$RECORD" ] && "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$RECORD" "$1" || true
}
if [ -n "$(old build)" ] && [ "$(old build)" != "$TORCH_BUILD" ]; then
  # a new driver or GPU: start clean rather than leave the old build's CUDA libraries (GBs) behind
  step "The torch build changes from $(old build) to $TORCH_BUILD: rebuilding the environment"
  rm -rf "$ENV_DIR"
  rm -f "$RECORD"
fi
if [ ! -x "$ENV_PY" ]; then
  step "Creating the app environment in $ENV_DIR"
  if [ -n "$UV" ]; then "$UV" venv -q --python "$PLAN_PYTHON" "$ENV_DIR"
  else
    case "$PLAN_PYTHON" in
      /*) ;;
      *) die "torch for this GPU needs Python $PLAN_PYTHON, and uv (which can fetch it) is unavailable." \
             "install python$PLAN_PYTHON, then run with LORA_STUDIO_PYTHON=python$PLAN_PYTHON." ;;
    esac
    "$PLAN_PYTHON" -m venv "$ENV_DIR" || die "python -m venv failed." "install your distribution's python3-venv package and run again."
  fi
fi

torch_version() { "$ENV_PY" -I -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null || true; }

TORCH_VERSION="$(torch_version)"
if [ -z "$TORCH_VERSION" ] || [ "$(old build)" != "$TORCH_BUILD" ]; then
  step "Installing torch ($TORCH_BUILD) - the largest download, it can take a while"
  reinstall=(); [ -n "$TORCH_VERSION" ] && reinstall=(--reinstall-package torch)
  [ -z "$UV" ] && [ -n "$TORCH_VERSION" ] && reinstall=(--force-reinstall --no-deps)
  if [ -n "$TORCH_WHEEL" ]; then pkg_install ${reinstall[@]+"${reinstall[@]}"} "$TORCH_WHEEL"
  elif [ -n "$TORCH_INDEX" ]; then pkg_install ${reinstall[@]+"${reinstall[@]}"} --index-url "$TORCH_INDEX" "$TORCH_REQ"
  else pkg_install ${reinstall[@]+"${reinstall[@]}"} "$TORCH_REQ"; fi \
    || die "installing torch ($TORCH_BUILD) failed." \
           "check the internet connection and run the installer again; it resumes. To install the CPU build instead: LORA_STUDIO_TORCH_BUILD=cpu."
  TORCH_VERSION="$(torch_version)"
  [ -n "$TORCH_VERSION" ] || die "torch was installed but does not import." "run the installer again; it rebuilds the environment."
fi
CONSTRAINTS="$PREFIX/constraints.txt"  # keeps the app's dependencies from swapping the chosen torch build
printf 'torch==%s\n' "$TORCH_VERSION" > "$CONSTRAINTS.tmp" && mv "$CONSTRAINTS.tmp" "$CONSTRAINTS"

if [ -n "$SRC" ]; then
  step "Building the LoRA Studio wheel from $SRC"
  rm -rf "$PREFIX/build" && mkdir -p "$PREFIX/build/src"
  # a clean copy: setuptools reuses build/lib, where stale files from older builds would ship
  (cd "$SRC" && tar --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.egg-info' \
     --exclude=__pycache__ --exclude=./.venv --exclude=./.whl --exclude=./.pytest_cache \
     --exclude=./lora-studio-demo --exclude=./out -cf - .) | (cd "$PREFIX/build/src" && tar -xf -)
  if [ -n "$UV" ]; then "$UV" build -q --wheel --out-dir "$PREFIX/build/dist" "$PREFIX/build/src"
  else "$ENV_PY" -m pip wheel -q --no-deps -w "$PREFIX/build/dist" "$PREFIX/build/src"; fi \
    || die "building the app wheel failed." "run the installer again; if it fails again, report the output above."
  WHEEL="$(ls "$PREFIX"/build/dist/lora_studio-*.whl | head -n 1)"
fi
APP_HASH="$(plan_tool wheel-hash "$WHEEL")"
if [ "$(old app_hash)" != "$APP_HASH" ] \
   || ! "$ENV_PY" -I -c 'from importlib.metadata import version; version("lora-studio")' 2>/dev/null; then
  step "Installing LoRA Studio and its libraries"
  reinstall=(); [ -n "$(old app_hash)" ] && reinstall=(--reinstall-package lora-studio)
  [ -z "$UV" ] && [ -n "$(old app_hash)" ] && reinstall=(--force-reinstall --no-deps)
  pkg_install ${reinstall[@]+"${reinstall[@]}"} --constraint "$CONSTRAINTS" "$WHEEL" \
    || die "installing LoRA Studio failed." "check the internet connection and run the installer again; it resumes."
fi
rm -rf "$PREFIX/build"

step "Adding the lora-studio command and the desktop entry"
write_if_changed() {  # write_if_changed FILE MODE < content : keeps a second run from touching anything
  local tmp="$1.tmp.$$"; mkdir -p "$(dirname "$1")"; cat > "$tmp"; chmod "$2" "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}
LAUNCHER_TEXT="$(plan_tool launcher "$ENV_DIR/bin/lora-studio" "$ENV_PY" "$PREFIX" "$OWNED_TAG")" \
  || die "could not write the lora-studio command." "run the installer again; if it fails again, report the output above."
printf '%s\n' "$LAUNCHER_TEXT" | write_if_changed "$LAUNCHER" 755
RES_ICONS="$("$ENV_PY" -I -c 'from lora_studio.paths import resource; print(resource("icons"))')"
if [ "$(uname -s)" = Darwin ]; then
  write_if_changed "$DESKTOP_FILE/Contents/MacOS/lora-studio" 755 <<EOF
#!/bin/sh
# $OWNED_TAG
exec "$ENV_DIR/bin/lora-studio" gui
EOF
  write_if_changed "$DESKTOP_FILE/Contents/Info.plist" 644 <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- $OWNED_TAG -->
<plist version="1.0"><dict>
<key>CFBundleName</key><string>LoRA Studio</string>
<key>CFBundleExecutable</key><string>lora-studio</string>
<key>CFBundleIdentifier</key><string>org.lorastudio.app</string>
<key>CFBundlePackageType</key><string>APPL</string>
</dict></plist>
EOF
else
  write_if_changed "$ICON_FILE" 644 < <(sed "s|<svg |<!-- $OWNED_TAG --><svg |" "$RES_ICONS/lora-studio.svg")
  write_if_changed "$DESKTOP_FILE" 644 <<EOF
[Desktop Entry]
Type=Application
Name=LoRA Studio
GenericName=LoRA trainer for Stable Diffusion
Comment=Train LoRA and DreamBooth-LoRA adapters for Stable Diffusion 1.5 and SDXL, preview blends
Exec=env LORA_STUDIO_FROM_MENU=1 "$LAUNCHER" gui
Icon=$ICON_FILE
Terminal=false
Categories=Graphics;Development;
StartupWMClass=lora-studio
X-LoRA-Studio=$OWNED_TAG
EOF
fi

if [ "$(uname -s)" != Darwin ]; then
  # PySide6 carries Qt but not the X11 helper libraries: without them the window aborts at start (exit 134)
  step "Checking that the app's window can open (Qt's platform plugin and the system libraries it needs)"
  "$ENV_PY" -I -m lora_studio.qt_check --install || say "(the installation goes on: the command-line tools work without the window)"
fi

step "Checking that torch sees the device chosen for it"
plan_tool plan --json > "$PREFIX/plan.json.tmp"
plan_tool record "$PREFIX/plan.json.tmp" "prefix=$PREFIX" "env=$ENV_DIR" "launcher=$LAUNCHER" \
  "desktop=$DESKTOP_FILE" "icon=$ICON_FILE" "torch_version=$TORCH_VERSION" "app_hash=$APP_HASH" \
  "app_version=$("$ENV_PY" -I -c 'import lora_studio; print(lora_studio.__version__)')" > "$RECORD.tmp"
rm -f "$PREFIX/plan.json.tmp"
if [ -f "$RECORD" ] && cmp -s "$RECORD.tmp" "$RECORD"; then rm -f "$RECORD.tmp"; else mv -f "$RECORD.tmp" "$RECORD"; fi
CHECK="$("$ENV_PY" -I -c 'from lora_studio.core.system import torch_check; c = torch_check(); print(c.summary())' 2>&1)" \
  || CHECK="the start-up check failed: $CHECK"
say "$CHECK"
rm -f "$MARKER"

say ""
say "LoRA Studio is installed (torch $TORCH_VERSION, $TORCH_BUILD)."
say "  start it:   $LAUNCHER        (or 'LoRA Studio' in your applications menu)"
say "  try it:     $LAUNCHER demo"
case ":$PATH:" in *":$BIN_DIR:"*) ;; *) say "  note: $BIN_DIR is not on your PATH; add it to use plain 'lora-studio'." ;; esac
say "  remove it:  bash $HERE/install.sh --uninstall${PREFIX:+ --prefix \"$PREFIX\"}"
