#!/usr/bin/python3
"""Solve the same request with libsolv (python3-solv) on the same Packages
files, for kiln's benchmark. Prints one JSON object.

usage: libsolv_bench.py PACKAGES_FILE... -- NAME...
Packages files must be uncompressed (libsolv does not read lz4).
"""
import json
import sys
import time

import solv


def main():
    sep = sys.argv.index("--")
    files, names = sys.argv[1:sep], sys.argv[sep + 1:]
    t0 = time.perf_counter()
    pool = solv.Pool()
    pool.setdisttype(solv.Pool.DISTTYPE_DEB)
    pool.setarch("amd64")
    installed = pool.add_repo("installed")
    pool.installed = installed
    for i, path in enumerate(files):
        repo = pool.add_repo("repo%d" % i)
        f = solv.xfopen(path)
        repo.add_debpackages(f)
        f.close()
    pool.addfileprovides()
    pool.createwhatprovides()
    t1 = time.perf_counter()
    jobs = []
    for n in names:
        sel = pool.select(n, solv.Selection.SELECTION_NAME)
        if sel.isempty():
            print(json.dumps({"error": "no package %s" % n}))
            return 1
        jobs += sel.jobs(solv.Job.SOLVER_INSTALL)
    solver = pool.Solver()
    solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 1)
    problems = solver.solve(jobs)
    t2 = time.perf_counter()
    if problems:
        print(json.dumps({"error": "; ".join(str(p) for p in problems)}))
        return 1
    trans = solver.transaction()
    pkgs = sorted("%s=%s" % (s.name, s.evr) for s in trans.newsolvables())
    print(json.dumps({"load_ms": (t1 - t0) * 1000, "solve_ms": (t2 - t1) * 1000, "packages": pkgs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
