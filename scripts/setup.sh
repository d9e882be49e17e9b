#!/usr/bin/env bash
# One-time, idempotent set-up of everything relam needs on a Debian 12 machine (run as root):
#   1. Debian packages: EGL + OSMesa for MuJoCo (Meta-World) offscreen rendering, and Mesa 25
#      lavapipe (Vulkan on the CPU) from bookworm-backports for ManiSkill/SAPIEN rendering
#      (Debian 12's own Mesa 22.3 lavapipe fails with "Failed to find a supported physical device").
#   2. A virtual environment in .venv with the pinned Python dependencies (constraints.txt keeps the
#      CPU torch 2.13.0 and numpy<2) and relam installed in editable mode.
# Re-running it does nothing that is already done (a stamp file records the installed inputs). The
# stamp covers pyproject.toml, so a changed entry point (the "relam.methods" group that lists the
# reward methods) re-installs relam, whose metadata is where relam.methods finds them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${RELAM_VENV:-$ROOT/.venv}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

need_apt=0
for p in libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6 libvulkan1 mesa-vulkan-drivers; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt=1
done
# lavapipe must come from backports (>= 25); the bookworm one cannot drive SAPIEN.
mesa_v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo none)
case "$mesa_v" in 25.*) ;; *) need_apt=1 ;; esac
if [ "$need_apt" = 1 ]; then
  echo "[setup] installing Debian packages (EGL/OSMesa for MuJoCo, Mesa 25 lavapipe for ManiSkill)"
  src=/etc/apt/sources.list.d/relam-backports.sources
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
    # Same mirror as the machine's Debian source, suite changed to bookworm-backports.
    uri=$(grep -hs "^URIs:" /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1 | awk '{print $2}')
    uri=${uri:-http://deb.debian.org/debian}
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" | $SUDO tee "$src" >/dev/null
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6 >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
fi

stamp="$VENV/.relam-stamp"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] installing Python dependencies into $VENV (torch CPU build, metaworld, mani-skill, SB3, ...)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -U pip
PIP_CONSTRAINT="$ROOT/constraints.txt" "$VENV/bin/pip" install -q -c constraints.txt -e ".[dev]"
echo "$want" > "$stamp"
echo "[setup] done"
