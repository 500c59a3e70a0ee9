#!/usr/bin/python3
"""Option B: one bwrap, started by the unprivileged user, makes the user namespace;
the parent maps a full range into it with newuidmap/newgidmap before bwrap goes on.
usage: kiln-bwrap.py OUTER_ROOT_UID TREE CMD...   (OUTER_ROOT_UID: 'self' -> 0=own uid,1..65535=subuids; or a subuid base -> 0..65535=base..)"""
import os, json, subprocess, sys, time
mode, tree, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
info_r, info_w = os.pipe(); blk_r, blk_w = os.pipe()
sc1 = os.open("/tmp/rootless-research/u/filter.bpf", os.O_RDONLY)
sc2 = os.open("/tmp/rootless-research/u/enosys.bpf", os.O_RDONLY)
fds = (info_w, blk_r, sc1, sc2)
argv = ["bwrap", "--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "ALL",
    "--userns-block-fd", str(blk_r), "--info-fd", str(info_w),
    "--add-seccomp-fd", str(sc1), "--add-seccomp-fd", str(sc2),
    "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/run",
    "--bind", tree, "/run/osbuild/tree", "--ro-bind", "/tmp/rootless-research/u/debs", "/run/osbuild/inputs/debs",
    "--ro-bind", "/tmp/rootless-research/u", "/run/osbuild/scripts",
    "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "localhost",
    "--die-with-parent", "--new-session", "--clearenv", "--setenv", "PATH", "/usr/sbin:/usr/bin:/sbin:/bin",
    "--setenv", "LC_ALL", "C.UTF-8", "--chdir", "/"] + cmd
t0 = time.monotonic()
p = subprocess.Popen(argv, pass_fds=fds)
for fd in fds: os.close(fd)
buf = b""
while True:
    c = os.read(info_r, 4096)
    if not c: sys.exit("bwrap exited before reporting its pid: %d" % p.wait())
    buf += c
    try: pid = json.loads(buf)["child-pid"]; break
    except ValueError: pass
if mode == "self":
    um = ["0", str(os.getuid()), "1", "1", "100000", "65535"]; gm = ["0", str(os.getgid()), "1", "1", "100000", "65535"]
elif mode.startswith("plusself:"):
    base = mode.split(":")[1]
    um = ["0", base, "65536", "65536", str(os.getuid()), "1"]; gm = ["0", base, "65536", "65536", str(os.getgid()), "1"]
else:
    um = gm = ["0", mode, "65536"]
subprocess.check_call(["newuidmap", str(pid)] + um)
subprocess.check_call(["newgidmap", str(pid)] + gm)
os.write(blk_w, b"x"); os.close(blk_w)
rc = p.wait()
print("bwrap rc=%d, %.2fs incl. mapping" % (rc, time.monotonic() - t0), file=sys.stderr)
sys.exit(rc)
