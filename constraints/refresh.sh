#!/usr/bin/env bash
# Regenerate the constraints of the install profiles: constraints/refresh.sh [PROFILE ...] (default: edge registry train).
#
# Each profile's file pins what pip's own resolver picks for that profile's extras, on its own, so that only the
# profiles holding the convert toolchain (litert-torch, ai-edge-quantizer: typing-extensions < 4.13, hence
# pydantic 2.11) carry its caps. The resolution is for the Python that runs it ($PYTHON, default .venv/bin/python)
# and the package index pip is configured with; local version labels are dropped (torch==2.13.0 matches the CPU
# build 2.13.0+cpu and the PyPI one alike).
#
# `all` is different: it is the environment ./run builds (.[all,dev], convert included) and tests, frozen from
# that venv ($VENV, default .venv) rather than resolved: refresh it after changing that environment.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$VENV/bin/python}
# profile -> the extras it resolves; a profile's file also covers the extras a machine of that kind may add
declare -A EXTRAS=([edge]=edge [registry]=registry,postgres [train]=train,cluster,raytrace,research)

freeze_all() {
  {
    echo "# The environment ./run installs and tests (.[all,dev], the convert toolchain and its caps included):"
    echo "# ./run installs with -c constraints/all.txt. Regenerate: constraints/refresh.sh all (a pip freeze of $VENV;"
    echo "# keep torch at the CPU build; --all keeps setuptools, which the tests use to build without isolation)."
    "$VENV/bin/python" -m pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+[A-Za-z0-9.]*$//' | LC_ALL=C sort -f
  } > constraints/all.txt.new
  mv constraints/all.txt.new constraints/all.txt
}

resolve() {
  local profile=$1 extras=${EXTRAS[$1]:-} report
  [ -n "$extras" ] || { echo "refresh.sh: unknown profile $profile (edge, registry, train, all)" >&2; return 2; }
  report=$(mktemp)
  # --ignore-installed: resolve from nothing, as a fresh venv would; the machine's own pins do not leak in
  "$PYTHON" -m pip install --dry-run --ignore-installed --quiet --report "$report" ".[$extras]" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  "$PYTHON" - "$report" "$profile" "$extras" > "constraints/$profile.txt.new" <<'PY'
import json, platform, sys
report, profile, extras = sys.argv[1:]
picked = json.load(open(report))["install"]
print(f"# Install profile `{profile}`: pip's resolver's picks for edgejoule[{extras}] "
      f"(Python {platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]}, {sys.platform}).")
print(f'# pip install -c constraints/{profile}.txt "edgejoule[{profile}]". Regenerate: constraints/refresh.sh {profile}')
pins = sorted((i["metadata"]["name"], i["metadata"]["version"].split("+")[0]) for i in picked
              if i["metadata"]["name"] != "edgejoule")
for name, version in sorted(pins, key=lambda p: p[0].lower()):
    print(f"{name}=={version}")
PY
  rm -f "$report"
  mv "constraints/$profile.txt.new" "constraints/$profile.txt"
  echo "constraints/$profile.txt: $(grep -vc '^#' "constraints/$profile.txt") pins" >&2
}

profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=(edge registry train)
for profile in "${profiles[@]}"; do
  if [ "$profile" = all ]; then freeze_all; else resolve "$profile"; fi
done
