#!/usr/bin/env bash
# Builds agent.bin from agent.c (make agent; agent_test.go runs it too, into
# another directory, and compares). The compiler's version goes with the
# blob (agent.bin.compiler): another compiler may build other bytes.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
out=${1:-$src/..}
cc=${CC:-gcc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$cc" -Os -fPIC -fvisibility=hidden -ffreestanding -nostdlib -static \
	-fno-stack-protector -fcf-protection=none -fno-asynchronous-unwind-tables \
	-fno-jump-tables -fno-builtin -mgeneral-regs-only \
	-Wall -Werror -Wl,-T,"$src/agent.ld" -Wl,--build-id=none -Wl,-e,0 \
	-o "$tmp/agent.elf" "$src/agent.c"
# Position-independent, no data of its own: nothing for a loader to do.
if readelf -rW "$tmp/agent.elf" | grep -q 'Relocation section'; then
	echo "agent: the blob needs relocations" >&2; exit 1
fi
extra=$(readelf -SW "$tmp/agent.elf" | awk '$2 ~ /^\./ && $2 != ".text" && $2 != ".symtab" && $2 != ".strtab" && $2 != ".shstrtab" && $2 != ".area" {print $2}')
if [ -n "$extra" ]; then
	echo "agent: sections besides .text: $extra" >&2; exit 1
fi
objcopy -O binary -j .text "$tmp/agent.elf" "$out/agent.bin"
chmod 644 "$out/agent.bin"
"$cc" --version | head -1 >"$out/agent.bin.compiler"
