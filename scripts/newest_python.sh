#!/usr/bin/env bash
# Prints the path of the newest Python >= 3.12 on this machine (PATH first, then pyenv), or nothing.
set -u
for v in 3.14 3.13 3.12; do
  if command -v "python$v" >/dev/null 2>&1 && "python$v" -c 'import sys' >/dev/null 2>&1; then
    command -v "python$v"; exit 0
  fi
done
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[2-9]\.[0-9]+$' | sort -t. -k2,2nr -k3,3nr); do
    if [ -x "$root/versions/$v/bin/python3" ]; then echo "$root/versions/$v/bin/python3"; exit 0; fi
  done
fi
exit 0
