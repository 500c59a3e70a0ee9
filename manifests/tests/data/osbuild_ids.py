# osbuild's stage id algorithm, written from its published description:
# reads a v2 manifest on stdin, prints [{name, id, stages}] per pipeline.
import hashlib, json, sys

def h(*parts):
    m = hashlib.sha256()
    for p in parts:
        m.update(p.encode())
    return m.hexdigest()

def d(v, sort=True):
    return json.dumps(v, sort_keys=sort)

manifest = json.load(sys.stdin)
pipeline_ids = {}
out = []
for p in manifest["pipelines"]:
    build = p.get("build")
    if build and build.startswith("name:"):
        build = pipeline_ids[build[5:]]
    epoch = p.get("source-epoch")
    base = None
    stages = []
    for s in p.get("stages", []):
        devices = {}
        pending = dict(s.get("devices", {}))
        while pending:
            for name, dev in list(pending.items()):
                parent = dev.get("parent")
                if parent and parent not in devices:
                    continue
                parts = [d(dev["type"])]
                if parent:
                    parts.append(d(devices[parent]))
                parts.append(d(dev.get("options") or {}))
                devices[name] = h(*parts)
                del pending[name]
        inputs = {}
        for name, ip in s.get("inputs", {}).items():
            refs = ip.get("references", {})
            if isinstance(refs, list):
                refs = {r: {} for r in refs}
            if ip["origin"] == "org.osbuild.pipeline":
                refs = {pipeline_ids[k[5:]]: v for k, v in refs.items() if k.startswith("name:")}
            inputs[name] = h(d(ip["type"]), d(ip["origin"]), d(refs), d(ip.get("options") or {}))
        mounts = []
        for mnt in s.get("mounts", []):
            parts = [d(mnt["type"])]
            if mnt.get("source"):
                parts.append(d(devices[mnt["source"]]))
            if mnt.get("partition"):
                parts.append(d(mnt["partition"]))
            if mnt.get("target"):
                parts.append(d(mnt["target"]))
            parts.append(d(mnt.get("options") or {}))
            mounts.append(h(*parts))
        parts = [d(s["type"]), d(build), d(base), d(s.get("options") or {})]
        if epoch is not None:
            parts.append(d(epoch))
        if inputs:
            parts.append(d(inputs))
        if mounts:
            parts.append(d(mounts, False))
        base = h(*parts)
        stages.append(base)
    pipeline_ids[p["name"]] = base
    out.append({"name": p["name"], "id": base, "stages": stages})
print(json.dumps(out))
