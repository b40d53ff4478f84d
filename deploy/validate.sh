#!/usr/bin/env bash
# Validates what `meshctl install` prints against the Kubernetes API's own
# JSON schemas (PyPI kubernetes-validate, strict: unknown fields are errors),
# for the API version Palisade is built against (k8s-openapi v1_35) and the
# newest one the validator knows; then checks that Palisade's CRD schemas
# accept the policy examples of examples/ and docs/ and reject malformed ones.
#
#   deploy/validate.sh [MESHCTL]      (default: target/debug/meshctl)
#
# Prints "SKIPPED: ..." and exits 0 only when PyPI cannot be reached.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
meshctl=${1:-${MESHCTL:-$root/target/debug/meshctl}}
versions=${KUBERNETES_VERSIONS:-"1.35.0 1.37.0"}
venv=${PALISADE_VALIDATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/palisade/validate-venv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate jsonschema 2>"$work/pip.err"; then
    if grep -qiE "connection|resolve|network|timed out|unreachable|No matching distribution" "$work/pip.err"; then
      echo "SKIPPED: PyPI unreachable, kubernetes-validate not installed ($(tail -1 "$work/pip.err"))"
      exit 0
    fi
    cat "$work/pip.err" >&2
    exit 1
  fi
fi

"$meshctl" install --secrets-dir "$work/secrets" >"$work/install.yaml" 2>/dev/null
"$meshctl" uninstall --include-crds >"$work/uninstall.yaml"
for v in $versions; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$work/install.yaml"
  echo "ok: meshctl install validates against Kubernetes $v (strict)"
done

"$venv/bin/python" - "$root" "$work/install.yaml" <<'PY'
import glob, json, sys
import jsonschema, yaml

root, install = sys.argv[1], sys.argv[2]
crds = {}
for d in yaml.safe_load_all(open(install)):
    if d and d["kind"] == "CustomResourceDefinition":
        s = d["spec"]
        for v in s["versions"]:
            crds[(f'{s["group"]}/{v["name"]}', s["names"]["kind"])] = v["schema"]["openAPIV3Schema"]

def schema(node):
    # OpenAPI v3 as Kubernetes uses it, as JSON Schema: int-or-string and
    # preserve-unknown-fields become what the API server accepts.
    if isinstance(node, dict):
        out = {k: schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if node.get("x-kubernetes-int-or-string"):
            out["type"] = ["integer", "string"]
        if node.get("type") == "object" and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(node, list):
        return [schema(v) for v in node]
    return node

def check(doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in crds:
        return None
    body = {k: v for k, v in doc.items() if k != "metadata"}
    body["metadata"] = {}
    jsonschema.validate(body, schema(crds[key]))
    return key

checked = 0
files = sorted(glob.glob(f"{root}/examples/**/*.yaml", recursive=True))
for f in files:
    for doc in yaml.safe_load_all(open(f)):
        if doc and check(doc):
            checked += 1
# Examples in docs/ (```yaml blocks).
for f in sorted(glob.glob(f"{root}/docs/*.md")):
    text = open(f).read()
    for block in text.split("```yaml")[1:]:
        block = block.split("```")[0]
        try:
            docs = list(yaml.safe_load_all(block))
        except yaml.YAMLError:
            continue
        for doc in docs:
            if isinstance(doc, dict) and check(doc):
                checked += 1
if checked == 0:
    sys.exit("no example was checked against the CRD schemas")
print(f"ok: {checked} policy examples from examples/ and docs/ match the CRD schemas")

bad = [
    {"apiVersion": "security.palisade.dev/v1", "kind": "AuthorizationPolicy", "spec": {"action": "PERMIT"}},
    {"apiVersion": "security.palisade.dev/v1", "kind": "AuthorizationPolicy", "spec": {"rules": "allow everyone"}},
    {"apiVersion": "security.palisade.dev/v1", "kind": "AuthorizationPolicy", "spec": {"rules": [{"from": [{"source": {"principal": ["a"]}}]}]}},
    {"apiVersion": "security.palisade.dev/v1", "kind": "PeerAuthentication", "spec": {"mtls": {"mode": "SOMETIMES"}}},
]
for doc in bad:
    try:
        check(doc)
    except jsonschema.ValidationError as e:
        continue
    sys.exit(f"the CRD schema accepted a malformed object: {json.dumps(doc)}")
print(f"ok: {len(bad)} malformed policy objects are rejected by the CRD schemas")
PY
