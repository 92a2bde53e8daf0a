#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/k8s without a cluster:
#  1. every resource against the API schemas of one pinned Kubernetes version, strictly (an
#     unknown or misspelt field is an error, as with `kubectl apply --validate=strict`);
#  2. what the schemas cannot see: duplicate keys, kustomization.yaml listing every manifest,
#     selectors that match the pod labels, the grace period covering preStop + HLM_DRAIN, the
#     Secret the pod reads, and the KV budget the server checks at start-up;
#  3. the kustomize output too, when kubectl is installed (it is optional).
# The validator lives in a virtualenv under the model cache, made once and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.31.0
# kubernetes-validate and everything it imports, pinned so that every run checks the same way.
REQUIREMENTS=(
  kubernetes-validate==1.31.0
  attrs==26.1.0
  importlib_resources==7.1.0
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  packaging==26.4
  PyYAML==6.0.4
  referencing==0.37.0
  rpds-py==2026.9.1
  typing_extensions==4.16.0
)
# Another folder may be given (an absolute path), e.g. a copy to try a change on.
dir=${1:-deploy/k8s}
venv="${HLM_CACHE_DIR:-$HOME/.cache/hybrid-llm}/venv-k8s"

if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv --clear "$venv"
fi
# Reinstall only when the pins change (or a previous install did not finish).
stamp="$venv/requirements.txt"
if [ "$(cat "$stamp" 2>/dev/null)" != "$(printf '%s\n' "${REQUIREMENTS[@]}")" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}"
  printf '%s\n' "${REQUIREMENTS[@]}" >"$stamp"
fi

# kustomization.yaml is not a Kubernetes API object: the validator has no schema for it and only
# warns. It is checked in step 2 instead.
manifests=()
for f in "$dir"/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done

# The validator exits 0 when it has no schema for a kind (a WARN line), e.g. for a misspelt
# apiVersion: only INFO lines count as passes.
check() {
  local out status=0
  out=$("$venv/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$@" 2>&1) || status=$?
  printf '%s\n' "$out"
  if [ "$status" -ne 0 ] || grep -qv '^INFO ' <<<"$out"; then
    echo "FAILED: the manifests above do not validate against Kubernetes $K8S_VERSION" >&2
    exit 1
  fi
}

echo "-- schemas (Kubernetes $K8S_VERSION, strict)"
check "${manifests[@]}"

echo "-- consistency"
"$venv/bin/python" - "$dir" <<'EOF'
import os, sys, yaml

d = sys.argv[1]
errors = []

class Loader(yaml.SafeLoader):
    pass

def mapping(loader, node, deep=False):
    seen = set()
    for k, _ in node.value:
        key = loader.construct_object(k, deep=deep)
        if key in seen:
            errors.append(f"{loader.name}:{k.start_mark.line + 1}: duplicate key {key!r}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)

Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)

def named(text, name):
    loader = Loader(text)
    loader.name = name
    return loader

docs = {}
for name in sorted(os.listdir(d)):
    if name.endswith(".yaml"):
        with open(os.path.join(d, name)) as f:
            found = [x for x in yaml.load_all(f.read(), Loader=lambda text: named(text, name)) if x]
        if not found:
            errors.append(f"{name}: no resource in it")
        docs[name] = found

def one(kind):
    found = [x for xs in docs.values() for x in xs if x.get("kind") == kind]
    if len(found) != 1:
        sys.exit(f"FAILED: expected one {kind}, found {len(found)}")
    return found[0]

# The Secret example stays out of kustomize on purpose: its token is a placeholder.
listed = set(one("Kustomization").get("resources", []))
expected = set(docs) - {"kustomization.yaml", "secret.example.yaml"}
if listed != expected:
    errors.append(f"kustomization.yaml lists {sorted(listed)}, the folder has {sorted(expected)}")

dep = one("Deployment")
pod = dep["spec"]["template"]
labels = pod["metadata"]["labels"]
def selects(what, selector):
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        errors.append(f"{what} selector {selector} does not match the pod labels {labels}")
selects("Deployment", dep["spec"]["selector"]["matchLabels"])
selects("Service", one("Service")["spec"]["selector"])
selects("PodDisruptionBudget", one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
target = one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
if (target["kind"], target["name"]) != ("Deployment", dep["metadata"]["name"]):
    errors.append(f"the autoscaler targets {target}, not the Deployment")

[c] = pod["spec"]["containers"]
env = {e["name"]: e for e in c.get("env", [])}
def number(name):
    return int(env[name]["value"])

# Kubernetes counts the preStop hook inside the grace period: the drain must fit after it.
grace = pod["spec"]["terminationGracePeriodSeconds"]
pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
drain = number("HLM_DRAIN")
if grace <= pre_stop + drain:
    errors.append(f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + HLM_DRAIN {drain}")

ref = env["HLM_TOKEN"]["valueFrom"]["secretKeyRef"]
secret = one("Secret")
if ref["name"] != secret["metadata"]["name"] or ref["key"] not in secret.get("stringData", {}):
    errors.append(f"HLM_TOKEN reads {ref}, which secret.example.yaml does not define")

# The server refuses to start when max-sessions full sessions exceed --max-kv-mb. Bytes per
# position for the 1.5B verifier: 28 layers x (K and V) x 2 KV heads x 128 dims x 4 bytes.
if env["HLM_VERIFIER_MODEL"]["value"] == "qwen2.5-coder-1.5b-instruct-q4_k_m":
    need = number("HLM_MAX_SESSIONS") * number("HLM_MAX_CONTEXT") * 28 * 2 * 2 * 128 * 4
    if need > number("HLM_MAX_KV_MB") << 20:
        errors.append(f"HLM_MAX_KV_MB {number('HLM_MAX_KV_MB')} < the {need >> 20} MiB the sessions need")

for e in errors:
    print("ERROR", e)
if errors:
    sys.exit(f"FAILED: {len(errors)} inconsistencies in {d}")
print(f"OK {len(docs)} files: kustomization, selectors, grace period, Secret, KV budget")
EOF

echo "-- kustomize output"
if command -v kubectl >/dev/null; then
  rendered=$(mktemp)
  trap 'rm -f "$rendered"' EXIT
  kubectl kustomize "$dir" >"$rendered"
  check "$rendered"
else
  echo "skipped: no kubectl here (the files themselves were checked above)"
fi
echo "Kubernetes manifests valid against Kubernetes $K8S_VERSION (kubernetes-validate ${REQUIREMENTS[0]#*==}, strict)"
