#!/usr/bin/env python3
"""Invariants of the rendered Kubernetes manifests (`make kube-validate`).

    kube-invariants.py RENDERED.yaml [--pinned]   check one rendered overlay
    kube-invariants.py --self-test RENDERED.yaml  break each invariant in a
                                                  copy and show it is caught

Checked: a default-deny NetworkPolicy; the license service reachable only
from the app; OpenBao's API only from the app, the license service and the
bootstrap Job; no container as root (and each read-only, all capabilities
dropped, with requests and limits); every image pinned by digest (--pinned);
every Secret and ConfigMap a pod or Ingress names exists, with the keys it
names; the license API token the same on both sides; the attestation roots
ConfigMap equal to app/trust/yubico and named in the config; the app's
client_ip_header and its Service's externalTrafficPolicy: Local.
Needs PyYAML (it comes with checkov in the tools venv).
"""

import copy
import base64
import pathlib
import sys
import tomllib

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
WORKLOADS = {"Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet", "Pod"}
APP, LICENSE, OPENBAO, BOOTSTRAP = "kleidia", "kleidia-license", "openbao", "kleidia-bootstrap"


def pod_template(doc):
    kind = doc["kind"]
    if kind == "Pod":
        return doc
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]
    return doc["spec"]["template"]


def workloads(docs):
    return [d for d in docs if d["kind"] in WORKLOADS]


def selects(selector, labels):
    """matchLabels / matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def pod_labels(doc):
    return pod_template(doc)["metadata"].get("labels") or {}


def sources(docs, target, port):
    """Who may open `port` on the pods of workload `target`, by the union of
    the NetworkPolicies that select them: workload names, or 'ANY' /
    'outside:<peer>' for peers outside the namespace's pods."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    target_doc = next(d for d in workloads(docs) if d["metadata"]["name"] == target)
    labels = pod_labels(target_doc)
    found = set()
    for p in policies:
        spec = p["spec"]
        if "Ingress" not in (spec.get("policyTypes") or ["Ingress"]):
            continue
        if not selects(spec.get("podSelector"), labels):
            continue
        for rule in spec.get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(pp.get("port") in (port, None) for pp in ports):
                continue
            peers = rule.get("from")
            if not peers:
                found.add("ANY")
                continue
            for peer in peers:
                if "ipBlock" in peer or "namespaceSelector" in peer:
                    found.add("outside:" + yaml.safe_dump(peer, default_flow_style=True).strip())
                    continue
                for w in workloads(docs):
                    if selects(peer["podSelector"], pod_labels(w)):
                        found.add(w["metadata"]["name"])
    return found


def containers(doc):
    spec = pod_template(doc)["spec"]
    return [(c, spec) for c in (spec.get("initContainers") or []) + spec["containers"]]


def check(docs, pinned):
    errors = []
    err = errors.append
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    # Default deny, both directions, for every pod.
    deny = [
        p
        for p in by_kind.get("NetworkPolicy", {}).values()
        if p["spec"].get("podSelector") == {}
        and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    if not deny:
        err("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")

    lic = sources(docs, LICENSE, 8090)
    if lic != {APP}:
        err(f"the license service (8090) is reachable from {sorted(lic)}, not only from the app")
    # OpenBao's own peers too: a Raft node joins through the leader's API
    # (retry_join, docs/ha.md).
    bao = sources(docs, OPENBAO, 8200)
    if bao != {APP, LICENSE, BOOTSTRAP, OPENBAO}:
        err(f"OpenBao (8200) is reachable from {sorted(bao)}, not exactly app, license, bootstrap, its peers")

    for w in workloads(docs):
        name = f'{w["kind"]}/{w["metadata"]["name"]}'
        spec = pod_template(w)["spec"]
        if spec.get("automountServiceAccountToken") is not False:
            err(f"{name}: automountServiceAccountToken is not false (no pod here needs the API)")
        for c, pspec in containers(w):
            cname = f'{name} container {c["name"]}'
            psc, csc = pspec.get("securityContext") or {}, c.get("securityContext") or {}
            user = csc.get("runAsUser", psc.get("runAsUser"))
            nonroot = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            if nonroot is not True or user is None or user == 0:
                err(f"{cname}: may run as root (runAsNonRoot {nonroot}, runAsUser {user})")
            if csc.get("readOnlyRootFilesystem") is not True:
                err(f"{cname}: root filesystem not read-only")
            if csc.get("allowPrivilegeEscalation") is not False:
                err(f"{cname}: allowPrivilegeEscalation is not false")
            if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
                err(f"{cname}: does not drop ALL capabilities")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set((res.get(part) or {}).keys()):
                    err(f"{cname}: no cpu and memory {part}")
            if pinned and "@sha256:" not in c["image"]:
                err(f"{cname}: image {c['image']} is not pinned by digest")

    # Every Secret and ConfigMap named exists, with the keys named.
    def need(kind, ref_name, key, where):
        obj = by_kind.get(kind, {}).get(ref_name)
        if obj is None:
            err(f"{where}: {kind} {ref_name} does not exist")
        elif key is not None and key not in (obj.get("data") or {}) | (obj.get("stringData") or {}):
            err(f"{where}: {kind} {ref_name} has no key {key}")

    for w in workloads(docs):
        name = f'{w["kind"]}/{w["metadata"]["name"]}'
        spec = pod_template(w)["spec"]
        for v in spec.get("volumes") or []:
            if "secret" in v:
                need("Secret", v["secret"]["secretName"], None, name)
            if "configMap" in v:
                need("ConfigMap", v["configMap"]["name"], None, name)
            for src in (v.get("projected") or {}).get("sources") or []:
                if "secret" in src:
                    need("Secret", src["secret"]["name"], None, name)
                if "configMap" in src:
                    need("ConfigMap", src["configMap"]["name"], None, name)
        for s in spec.get("imagePullSecrets") or []:
            need("Secret", s["name"], None, name)
        for c, _ in containers(w):
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    need("Secret", ref["name"], ref["key"], name)
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    need("ConfigMap", ref["name"], ref["key"], name)
            for e in c.get("envFrom") or []:
                if "secretRef" in e:
                    need("Secret", e["secretRef"]["name"], None, name)
                if "configMapRef" in e:
                    need("ConfigMap", e["configMapRef"]["name"], None, name)
    for ing in by_kind.get("Ingress", {}).values():
        # cert-manager creates the TLS Secret of an Ingress it is asked to.
        managed = any(k.startswith("cert-manager.io/") for k in ing["metadata"].get("annotations") or {})
        for t in ing["spec"].get("tls") or []:
            if not managed:
                need("Secret", t["secretName"], None, f'Ingress/{ing["metadata"]["name"]}')

    # The license API token: the app's copy is the license service's.
    app_dep = by_kind.get("Deployment", {}).get(APP)
    lic_dep = by_kind.get("Deployment", {}).get(LICENSE)
    if app_dep and lic_dep:
        def secret_of(dep, mount_dir):
            spec = pod_template(dep)["spec"]
            vm = next(
                (m for c, _ in containers(dep) for m in c.get("volumeMounts") or [] if m["mountPath"] == mount_dir),
                None,
            )
            vol = vm and next((v for v in spec["volumes"] if v["name"] == vm["name"]), None)
            return vol and by_kind.get("Secret", {}).get(vol["secret"]["secretName"])

        cfg = by_kind.get("ConfigMap", {})
        app_cfg_doc = next((c for n, c in cfg.items() if "kleidia.toml" in (c.get("data") or {})), None)
        app_cfg = tomllib.loads(app_cfg_doc["data"]["kleidia.toml"]) if app_cfg_doc else {}
        tok_path = pathlib.PurePosixPath(app_cfg.get("license", {}).get("api_token_file", "/missing/x"))
        lic_env = {e["name"]: e.get("value") for c, _ in containers(lic_dep) for e in c.get("env") or []}
        lic_path = pathlib.PurePosixPath(lic_env.get("KLEIDIA_LICENSE_API_TOKEN_FILE") or "/missing/y")
        a = secret_of(app_dep, str(tok_path.parent))
        b = secret_of(lic_dep, str(lic_path.parent))
        av = a and (a.get("data") or {}).get(tok_path.name)
        bv = b and (b.get("data") or {}).get(lic_path.name)
        if not av or av != bv:
            err("the license API token is not wired on both sides with the same value")

        # Attestation roots: the ConfigMap is Yubico's bundle and is what the config names.
        roots_file = pathlib.PurePosixPath(app_cfg.get("attestation", {}).get("roots_file", "/missing/z"))
        spec = pod_template(app_dep)["spec"]
        mount = next(
            (m for c, _ in containers(app_dep) for m in c.get("volumeMounts") or [] if m["mountPath"] == str(roots_file.parent)),
            None,
        )
        vol = mount and next((v for v in spec["volumes"] if v["name"] == mount["name"]), None)
        roots_cm = vol and "configMap" in vol and cfg.get(vol["configMap"]["name"])
        want = "".join(
            (REPO / "app/trust/yubico" / f).read_text()
            for f in ("piv-attestation-root-263751.pem", "attestation-root-1.pem", "piv-attestation-intermediates.pem")
        )
        if not roots_cm or (roots_cm.get("data") or {}).get(roots_file.name) != want:
            err("attestation.roots_file is not the mounted ConfigMap of app/trust/yubico's roots")
        if not app_cfg.get("server", {}).get("client_ip_header"):
            err("server.client_ip_header is not set in the app's config")
        svc = by_kind.get("Service", {}).get(APP)
        if not svc or svc["spec"].get("externalTrafficPolicy") != "Local":
            err("the app's Service does not keep client addresses (externalTrafficPolicy: Local)")
    else:
        err("the app or the license Deployment is missing")
    return errors


def self_test(docs):
    """Each mutation must be caught; the unmodified documents must pass."""
    base = check(docs, pinned=False)
    if base:
        print("self-test: the unmodified documents fail:", *base, sep="\n  ")
        return 1

    def find(kind, name):
        return lambda ds: next(d for d in ds if d["kind"] == kind and d["metadata"]["name"] == name)

    def drop_deny(ds):
        ds[:] = [d for d in ds if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "default-deny")]

    def open_license(ds):
        find("NetworkPolicy", "kleidia-license")(ds)["spec"]["ingress"][0]["from"].append({"podSelector": {}})

    def bao_from_postgres(ds):
        find("NetworkPolicy", "openbao")(ds)["spec"]["ingress"][0]["from"].append(
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres"}}}
        )

    def root(ds):
        pod_template(find("StatefulSet", "postgres")(ds))["spec"]["containers"][0].setdefault("securityContext", {})[
            "runAsUser"
        ] = 0

    def missing_secret(ds):
        ds[:] = [d for d in ds if not (d["kind"] == "Secret" and d["metadata"]["name"].startswith("kleidia-license"))]

    def other_token(ds):
        s = next(d for d in ds if d["kind"] == "Secret" and d["metadata"]["name"].startswith("kleidia-license"))
        s["data"]["license-api-token"] = base64.b64encode(b"another").decode()

    def tagged(ds):
        pod_template(find("Deployment", "kleidia")(ds))["spec"]["containers"][0]["image"] = "kleidia/kleidia:latest"

    cases = [
        ("default deny removed", drop_deny, False, "default-deny"),
        ("license open to any pod", open_license, False, "license service"),
        ("OpenBao open to PostgreSQL", bao_from_postgres, False, "OpenBao"),
        ("PostgreSQL as root", root, False, "root"),
        ("a referenced Secret missing", missing_secret, False, "does not exist"),
        ("different license tokens", other_token, False, "license API token"),
        ("an image by tag", tagged, True, "not pinned"),
    ]
    failed = 0
    for what, mutate, pinned, expect in cases:
        ds = copy.deepcopy(docs)
        if pinned:  # pin every other image so only the mutation fails
            for w in workloads(ds):
                for c, _ in containers(w):
                    if "@sha256:" not in c["image"]:
                        c["image"] += "@sha256:" + "0" * 64
        mutate(ds)
        errs = check(ds, pinned)
        ok = any(expect in e for e in errs)
        print(f"self-test: {what}: {'caught' if ok else 'NOT CAUGHT'}")
        failed += not ok
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv):
    if argv and argv[0] == "--self-test":
        docs = [d for d in yaml.safe_load_all(open(argv[1])) if d]
        return self_test(docs)
    path, pinned = argv[0], "--pinned" in argv[1:]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    errors = check(docs, pinned)
    for e in errors:
        print(f"kube-invariants: {path}: {e}", file=sys.stderr)
    print(f"kube-invariants: {path}: {'OK' if not errors else f'{len(errors)} violation(s)'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
