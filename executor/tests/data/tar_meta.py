# Prints, as JSON, what a tar archive records of each member: its kind,
# mode (with setuid, setgid and sticky bits), owner, group, device numbers,
# symbolic link target and extended attributes (values in hex). Used by
# executor/tests/debian.rs to compare kiln's artifacts with mmdebstrap's.
import json
import sys
import tarfile

KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    # A hard link's entry stands for the same kind of file as its target.
    tarfile.LNKTYPE: "file",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.DIRTYPE: "dir",
    tarfile.FIFOTYPE: "fifo",
}
PREFIX = "SCHILY.xattr."

out = {}
with tarfile.open(sys.argv[1], "r:*") as archive:
    for m in archive:
        name = m.name
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/") or "."
        kind = KINDS.get(m.type, "other:%r" % m.type)
        xattrs = {
            k[len(PREFIX):]: v.encode("utf-8", "surrogateescape").hex()
            for k, v in m.pax_headers.items()
            if k.startswith(PREFIX)
        }
        if name in out:
            raise SystemExit("%s: %s is in the archive twice" % (sys.argv[1], name))
        out[name] = {
            "kind": kind,
            "mode": "%04o" % m.mode,
            "uid": m.uid,
            "gid": m.gid,
            "device": [m.devmajor, m.devminor] if kind in ("char", "block") else None,
            "link": m.linkname if kind == "symlink" else None,
            "xattrs": xattrs,
        }
json.dump(out, sys.stdout, sort_keys=True)
