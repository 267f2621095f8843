#!/usr/bin/env python3
"""`make image-test`: start the images the way the cluster would, from the
rendered dev overlay itself, and use them.

Every container runs with the image, command, arguments, environment,
volumes, user, groups and security context its manifest gives: read-only
root filesystem, all capabilities dropped, no privilege escalation, non-root;
ConfigMaps and Secrets become read-only files (owned by the pod's fsGroup,
with the manifest's mode), emptyDirs tmpfs, volume claims directories, the
projected service-account token a JWT signed by a key of this test (which
the bootstrap Job gives OpenBao as the cluster's signing key). All four share
one podman pod whose /etc/hosts maps the Service names, as cluster DNS would.

Then, in the order of docs/deploy.md: PostgreSQL; OpenBao in server mode
(raft), initialised and unsealed with `bao operator init` through `podman
exec`; the kleidia-migrate Job; the kleidia-bootstrap Job with the root
token (which it revokes); the license service and the app. It checks
/readyz (ready, OpenBao reachable), the first admin created with `kleidia
user create` in the app container, a sign-in through the API with the
Ingress's X-Forwarded-For, the license status through the app (its API
token) and that the license service refuses a caller without the token,
/metrics with and without its token, and the containers' runtime settings as
podman reports them.

    image-test.py RENDER_DIR   (a copy of kustomize/ with its dev secrets)
Run by scripts/image-test.sh, which builds the images first.
"""

import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
PODMAN = [str(REPO / "scripts/podman.sh")]
POD = os.environ.get("KLEIDIA_IMAGE_TEST_POD", "kleidia-image-test")
PORT = int(os.environ.get("KLEIDIA_IMAGE_TEST_PORT", "18480"))  # app; +1 license; +2 OpenBao
HOSTS = ["postgres", "openbao", "openbao-0.openbao-internal", "kleidia-license", "kleidia"]
PUBLIC_HOST = "kleidia.example.com"
NAMESPACE = "kleidia"
T0 = time.time()
passed, failed = 0, 0


def log(msg):
    print(f"image-test: [{time.time() - T0:5.1f}s] {msg}", flush=True)


class Stop(Exception):
    """A step the rest depends on failed."""


def check(what, ok, detail="", required=False):
    global passed, failed
    if ok:
        passed += 1
        log(f"ok   {what}")
    else:
        failed += 1
        log(f"FAIL {what} {detail}")
        if required:
            raise Stop(what)


def podman(*args, input=None, check_rc=True):
    r = subprocess.run(PODMAN + list(args), input=input, capture_output=True, text=True)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])}…: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def http(method, port, path, body=None, headers=None, timeout=10):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=body)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        return 0, str(e)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def service_account_token(key, subject):
    """What the kubelet projects: an RS256 JWT with the pod's service account."""
    now = int(time.time())
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = {
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": subject,
        "aud": ["openbao"],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    payload = b64url(json.dumps(claims).encode())
    sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key)],
        input=f"{header}.{payload}".encode(),
        capture_output=True,
        check=True,
    ).stdout
    return f"{header}.{payload}.{b64url(sig)}"


class Cluster:
    def __init__(self, render_dir, images, work):
        self.render_dir = render_dir
        self.images = images  # manifest image name -> local reference
        self.work = work
        self.sa_key = work / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(self.sa_key), "2048"], check=True, capture_output=True)
        self.sa_pub = subprocess.run(
            ["openssl", "rsa", "-in", str(self.sa_key), "-pubout"], check=True, capture_output=True, text=True
        ).stdout
        self.render()

    def render(self):
        out = subprocess.run(
            ["kubectl", "kustomize", str(self.render_dir / "overlays/dev")], check=True, capture_output=True, text=True
        ).stdout
        self.docs = [d for d in yaml.safe_load_all(out) if d]

    def find(self, kind, name):
        for d in self.docs:
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
        raise KeyError(f"{kind}/{name}")

    def image(self, ref):
        name = ref.split("@")[0].rsplit(":", 1)[0] if "@" not in ref else ref.split("@")[0]
        name = name.rsplit(":", 1)[0]
        return self.images[name]

    def run(self, kind, name, detach=True, container_index=0):
        """podman run the workload's container as its manifest says."""
        doc = self.find(kind, name)
        spec = doc["spec"]["template"]["spec"]
        c = spec["containers"][container_index]
        psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}
        user, group = csc.get("runAsUser", psc.get("runAsUser")), csc.get("runAsGroup", psc.get("runAsGroup"))
        fs_group = psc.get("fsGroup")
        cname = f"{name}" if detach else f"{name}-job"
        args = ["run", "--pod", POD, "--name", cname, "--user", f"{user}:{group}"]
        if fs_group is not None:
            args += ["--group-add", str(fs_group)]
        if csc.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        if (csc.get("capabilities") or {}).get("drop") == ["ALL"]:
            args += ["--cap-drop", "ALL"]
        if csc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates") or []}
        vdir = self.work / "volumes" / name
        for m in c.get("volumeMounts") or []:
            vname = m["name"]
            ro = ",ro" if m.get("readOnly") else ""
            if vname in claims:
                d = self.work / "claims" / name / vname
                if not d.exists():
                    d.mkdir(parents=True)
                    os.chown(d, 0, fs_group or 0)
                    d.chmod(0o2770)
                args += ["-v", f"{d}:{m['mountPath']}:rw"]
                continue
            v = vols[vname]
            if "emptyDir" in v:
                size = (v["emptyDir"] or {}).get("sizeLimit", "64Mi").replace("Mi", "m")
                args += ["--tmpfs", f"{m['mountPath']}:rw,size={size},mode=1777"]
                continue
            d = vdir / vname
            if not d.exists():
                self.materialise(v, d, fs_group)
            src = d / m["subPath"] if m.get("subPath") else d
            args += ["-v", f"{src}:{m['mountPath']}:ro" if ro else f"{src}:{m['mountPath']}"]
        for e in c.get("env") or []:
            if "value" not in e:
                raise RuntimeError(f"{name}: env {e['name']} is not a plain value")
            args += ["--env", f"{e['name']}={e['value']}"]
        if c.get("command"):
            args += ["--entrypoint", json.dumps(c["command"])]
        if detach:
            args.insert(1, "--detach")
        else:
            args.insert(1, "--rm")
        args += [self.image(c["image"])] + list(c.get("args") or [])
        r = podman(*args, check_rc=False)
        if detach and r.returncode != 0:
            raise RuntimeError(f"{name} did not start: {r.stderr}")
        return r

    def materialise(self, v, d, fs_group):
        """A volume's files as the kubelet writes them (mode, group)."""
        d.mkdir(parents=True)
        files = {}
        if "configMap" in v:
            cm = self.find("ConfigMap", v["configMap"]["name"])
            files = {k: s.encode() for k, s in (cm.get("data") or {}).items()}
            mode = v["configMap"].get("defaultMode", 0o644)
        elif "secret" in v:
            s = self.find("Secret", v["secret"]["secretName"])
            files = {k: base64.b64decode(x) for k, x in (s.get("data") or {}).items()}
            mode = v["secret"].get("defaultMode", 0o644)
        elif "projected" in v:
            mode = 0o600
            for src in v["projected"]["sources"]:
                sat = src["serviceAccountToken"]
                files[sat["path"]] = service_account_token(self.sa_key, self.subject).encode()
                mode = 0o640
        else:
            raise RuntimeError(f"volume {v['name']}: not emulated")
        for k, data in files.items():
            p = d / k
            p.write_bytes(data)
            os.chown(p, 0, fs_group or 0)
            p.chmod(mode)
        os.chown(d, 0, fs_group or 0)
        d.chmod(0o750)

    def probe(self, name, kind, probe_name, port_map, timeout):
        """Run the manifest's probe until it passes."""
        c = self.find(kind, name)["spec"]["template"]["spec"]["containers"][0]
        p = c[probe_name]
        ports = {pp["name"]: pp["containerPort"] for pp in c.get("ports") or []}
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            if "exec" in p:
                r = podman("exec", name, *p["exec"]["command"], check_rc=False)
                if r.returncode == 0:
                    return True
                last = r.stdout + r.stderr
            elif "httpGet" in p:
                port = p["httpGet"]["port"]
                port = ports.get(port, port)
                s, body = http("GET", port_map[port], p["httpGet"]["path"], timeout=3)
                if 200 <= s < 400:
                    return True
                last = f"{s} {body[:200]}"
            elif "tcpSocket" in p:
                port = p["tcpSocket"]["port"]
                port = ports.get(port, port)
                s, body = http("GET", port_map[port], "/", timeout=3)
                if s != 0:
                    return True
                last = body
            time.sleep(1)
        log(f"{name} {probe_name} did not pass: {last}")
        logs = podman("logs", "--tail", "30", name, check_rc=False)
        print(logs.stdout, logs.stderr, file=sys.stderr)
        return False


def main():
    render_dir = pathlib.Path(sys.argv[1])
    digests = (REPO / "target/image/digests").read_text().split("\n")
    built = {line.split()[0] for line in digests if line.strip()}
    overlay = yaml.safe_load((render_dir / "overlays/dev/kustomization.yaml").read_text())
    images = {}
    for i in overlay["images"]:
        # The overlay pins the digests of the build that wrote them; run the
        # images this run built: the overlay's tag, else (pinned by digest)
        # the dev tag of the license service (the dev overlay's TEST-key
        # image), else the one tag built.
        same = sorted(b for b in built if b.split(":")[0] == i["name"])
        tag = i.get("newTag")
        pick = [b for b in same if tag and b.endswith(":" + tag)] or [b for b in same if b.endswith("-dev-testkey")] or same
        if not pick:
            raise RuntimeError(f"image {i['name']} was not built")
        images[i["name"]] = "localhost/" + pick[0]
    log("images: " + ", ".join(sorted(images.values())))
    work = pathlib.Path(tempfile.mkdtemp(prefix="kleidia-image-test-"))
    cluster = Cluster(render_dir, images, work)
    podman("pod", "rm", "--force", "--ignore", POD, check_rc=False)
    ports = {8080: PORT, 8090: PORT + 1, 8200: PORT + 2}
    pod = ["pod", "create", "--name", POD]
    for inside, outside in ports.items():
        pod += ["-p", f"127.0.0.1:{outside}:{inside}"]
    for h in HOSTS:
        pod += ["--add-host", f"{h}:127.0.0.1"]
    podman(*pod)
    try:
        scenario(cluster, ports, work)
    except Stop as e:
        log(f"stopped: the rest needs: {e}")
        for name in ("postgres", "openbao", "kleidia-license", "kleidia"):
            r = podman("logs", "--tail", "15", name, check_rc=False)
            if r.returncode == 0:
                print(f"--- {name}:", r.stdout[-3000:], r.stderr[-3000:], sep="\n", file=sys.stderr)
    finally:
        if os.environ.get("KLEIDIA_IMAGE_TEST_KEEP"):
            log(f"kept pod {POD} and {work}")
        else:
            podman("pod", "rm", "--force", "--time", "5", POD, check_rc=False)
            shutil.rmtree(work, ignore_errors=True)
    print(f"image-test: {passed} passed, {failed} failed")
    return 1 if failed else 0


def scenario(cluster, ports, work):
    # PostgreSQL.
    cluster.subject = "system:serviceaccount:kleidia:postgres"
    cluster.run("StatefulSet", "postgres")
    check("PostgreSQL ready (its readiness probe)", cluster.probe("postgres", "StatefulSet", "readinessProbe", ports, 120), required=True)

    # OpenBao, server mode with raft storage, as the StatefulSet runs it.
    cluster.subject = "system:serviceaccount:kleidia:openbao"
    cluster.run("StatefulSet", "openbao")
    check("OpenBao started (startup probe)", cluster.probe("openbao", "StatefulSet", "startupProbe", ports, 60), required=True)
    s, body = http("GET", ports[8200], "/v1/sys/health")
    check("OpenBao is a server, not initialised (501)", s == 501, f"{s} {body[:200]}")
    r = podman("exec", "openbao", "bao", "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
    init = json.loads(r.stdout)
    podman("exec", "openbao", "bao", "operator", "unseal", init["unseal_keys_b64"][0])
    check("OpenBao unsealed and ready (readiness probe)", cluster.probe("openbao", "StatefulSet", "readinessProbe", ports, 60), required=True)

    # The migration Job.
    r = cluster.run("Job", "kleidia-migrate", detach=False)
    check("kleidia-migrate Job completed", r.returncode == 0, r.stdout[-500:] + r.stderr[-1500:], required=True)
    check("kleidia-migrate granted the runtime role", "runtime role kleidia_app granted" in r.stdout, r.stdout[-300:])

    # The bootstrap Job, with the root token and the signing key filled in.
    secrets = cluster.render_dir / "overlays/dev/secrets"
    (secrets / "openbao-bootstrap-token").write_text(init["root_token"])
    (secrets / "openbao-sa.pub").write_text(cluster.sa_pub)
    cluster.render()
    r = cluster.run("Job", "kleidia-bootstrap", detach=False)
    check("kleidia-bootstrap Job completed", r.returncode == 0, r.stdout[-500:] + r.stderr[-1500:], required=True)
    s, body = http("GET", ports[8200], "/v1/auth/token/lookup-self", headers={"X-Vault-Token": init["root_token"]})
    check("the root token is revoked after bootstrap (403)", s == 403, f"{s} {body[:200]}")

    # The license service and the app, each with its service account's token.
    cluster.subject = f"system:serviceaccount:{NAMESPACE}:kleidia-license"
    cluster.run("Deployment", "kleidia-license")
    check("license service ready (readiness probe: OpenBao via JWT)", cluster.probe("kleidia-license", "Deployment", "readinessProbe", ports, 60), required=True)
    cluster.subject = f"system:serviceaccount:{NAMESPACE}:kleidia"
    cluster.run("Deployment", "kleidia")
    check("app started (startup probe)", cluster.probe("kleidia", "Deployment", "startupProbe", ports, 120), required=True)
    check("app ready (readiness probe)", cluster.probe("kleidia", "Deployment", "readinessProbe", ports, 60), required=True)
    s, body = http("GET", ports[8080], "/readyz")
    ready = json.loads(body) if s == 200 else {}
    check("/readyz: ready, PostgreSQL and OpenBao reachable", s == 200 and ready.get("status") == "ready", f"{s} {body[:300]}")

    # The first admin, as docs/deploy.md creates it (kubectl exec).
    password = base64.b64encode(os.urandom(18)).decode()
    r = podman(
        "exec", "-i", "kleidia", "kleidia", "--config", "/etc/kleidia/kleidia.toml",
        "user", "create", "--username", "admin", "--role", "admin", "--password-stdin",
        input=password + "\n", check_rc=False,
    )
    check("first admin created with kleidia user create", r.returncode == 0, r.stderr[-500:], required=True)

    # A sign-in through the API, as the Ingress forwards it.
    headers = {
        "Host": PUBLIC_HOST,
        "Origin": f"https://{PUBLIC_HOST}",
        "Content-Type": "application/json",
        "X-Forwarded-For": "203.0.113.7",
    }
    s, body = http("POST", ports[8080], "/api/auth/login", json.dumps({"username": "admin", "password": password}).encode(), headers)
    token = json.loads(body).get("token") if s == 200 else None
    check("sign-in as the first admin", bool(token), f"{s} {body[:300]}", required=True)
    auth = {"Host": PUBLIC_HOST, "Authorization": f"Bearer {token}"}
    s, body = http("GET", ports[8080], "/api/license", headers=auth)
    status = json.loads(body) if s == 200 else {}
    check("license status through the app (trial, from the license service)", s == 200 and status.get("status") == "TRIAL" and not status.get("degraded"), f"{s} {body[:300]}")
    log(f"license status: {json.dumps(status)[:200]}")
    s, body = http("GET", ports[8090], "/license/status")
    check("the license service refuses a caller without the API token (401)", s == 401, f"{s} {body[:200]}")

    # /metrics: its token, from the Secret the app mounts.
    secret = cluster.find("Secret", next(v["secret"]["secretName"] for v in cluster.find("Deployment", "kleidia")["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"))
    metrics_token = base64.b64decode(secret["data"]["metrics-token"]).decode()
    s, _ = http("GET", ports[8080], "/metrics")
    check("/metrics without its token refused", s in (401, 403, 404), str(s))
    s, body = http("GET", ports[8080], "/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
    check("/metrics with its token", s == 200 and "# TYPE" in body, f"{s} {body[:200]}")

    # What podman says the containers ran with.
    for name in ("postgres", "openbao", "kleidia-license", "kleidia"):
        i = json.loads(podman("container", "inspect", name).stdout)[0]
        hc = i["HostConfig"]
        user = i["Config"]["User"].split(":")[0]
        caps = i.get("EffectiveCaps") or []
        ok = hc["ReadonlyRootfs"] and user not in ("", "0", "root") and not caps and i["State"]["Running"]
        check(f"{name}: running, read-only root, uid {user}, no capabilities", ok, f"ro={hc['ReadonlyRootfs']} user={user} caps={caps}")


if __name__ == "__main__":
    sys.exit(main())
