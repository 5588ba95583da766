#!/usr/bin/env bash
# Makes sure a Vulkan driver is present. On a machine without a GPU driver it installs Mesa's
# software Vulkan adapter (lavapipe): ../shared/tools/install-lavapipe.sh when it exists (Mesa 25
# from bookworm-backports, 4-8x faster compute than Debian 12's Mesa 22), Debian's
# mesa-vulkan-drivers otherwise. Idempotent; installing needs root (or sudo).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
icds=$(ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null | grep '\.json$' | tr '\n' ' ' || true)
if [ -n "$icds" ] && ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  echo "setup: Vulkan loader and drivers present: $icds"
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if [ -f "$here/../shared/tools/install-lavapipe.sh" ]; then
  $sudo bash "$here/../shared/tools/install-lavapipe.sh"
else
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
fi
