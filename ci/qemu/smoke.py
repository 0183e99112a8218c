#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Quick self-test of the vmmci QEMU device model (no guest needed).

Starts qemu-system-x86_64 (-M pc -nodefaults -display none -S) with
-device vmmci,id=vmmci0 and a QMP socket, then checks over QMP:
  * query-pci: 0b5d:0777 class 0x0780 subsystem 0b5d:ffff, INTA, one
    4096-byte I/O BAR (the revision is checked by regtest.py)
  * qom-list / qom-get: features=7, command=0, driver-ok=false, ...
  * qom-set request=bogus, request=shutdown (no DRIVER_OK) and fault=bogus
    fail; features can be set after realize (fault modes: regtest.py)
  * qom-set request=stop without a driver ends QEMU, and QEMU's stderr says
    "vmmci: end-reason=stop-without-driver"

The QEMU binary is --qemu, else $VMMCI_QEMU, else the output of
scripts/build-qemu (a cache hit if it was built before).
Exit status 0 if every check passed.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "ci", "e2e"))

from harness import FIRMWARE, Qmp as QMP, build_qemu  # noqa: E402
DEV = "/machine/peripheral/vmmci0"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--qemu", help="qemu-system-x86_64 to test")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also print QEMU's stderr")
    args = ap.parse_args()
    qemu = build_qemu(args.qemu)

    failures = []

    def check(what, cond, detail=""):
        print("%s %s%s" % ("ok  " if cond else "FAIL", what,
                           (": " + str(detail)) if detail != "" else ""))
        if not cond:
            failures.append(what)

    tmp = tempfile.mkdtemp(prefix="vmmci-smoke-")
    qmp_path = os.path.join(tmp, "qmp.sock")
    errlog = os.path.join(tmp, "stderr.log")
    cmdline = [qemu, "-M", "pc", "-nodefaults", "-display", "none", "-S",
               *FIRMWARE, "-qmp", "unix:%s,server=on,wait=off" % qmp_path,
               "-device", "vmmci,id=vmmci0"]
    print("# " + " ".join(cmdline))
    with open(errlog, "w") as err:
        proc = subprocess.Popen(cmdline, stdin=subprocess.DEVNULL,
                                stdout=err, stderr=err)
    try:
        q = QMP(qmp_path)

        pci = [d for b in q.cmd("query-pci") for d in b["devices"]
               if d["id"]["vendor"] == 0x0b5d]
        check("PCI device 0b5d:0777 present", len(pci) == 1 and
              pci[0]["id"]["device"] == 0x0777, pci)
        if pci:
            d = pci[0]
            check("class 0x0780", d["class_info"]["class"] == 0x0780,
                  d["class_info"])
            check("subsystem 0b5d:ffff",
                  (d["id"].get("subsystem-vendor"), d["id"].get("subsystem"))
                  == (0x0b5d, 0xffff), d["id"])
            check("interrupt pin INTA", d.get("irq_pin") == 1,
                  d.get("irq_pin"))
            bars = d.get("regions", [])
            check("one 4096-byte I/O BAR0",
                  len(bars) == 1 and bars[0]["bar"] == 0 and
                  bars[0]["type"] == "io" and bars[0]["size"] == 4096, bars)

        names = {p["name"] for p in q.cmd("qom-list", path=DEV)}
        want = {"request", "features", "command", "guest-features", "status",
                "driver-ok", "isr", "end-reason", "timer-armed-ms",
                "last-ack-ns", "acks", "raise-time-ns", "host-offset-ns",
                "host-skew-ppb", "auto-syncrtc", "short-timeout-ms",
                "long-timeout-ms", "unmatched-read", "stop-pending",
                "fault", "raise", "storm", "storm-interval-us",
                "storm-count"}
        check("qom-list has the vmmci properties", want <= names,
              sorted(want - names))

        def get(p):
            return q.cmd("qom-get", path=DEV, property=p)

        for prop, val in (("features", 7), ("command", 0),
                          ("guest-features", 0), ("status", 0), ("isr", 0),
                          ("driver-ok", False), ("stop-pending", False),
                          ("end-reason", ""), ("timer-armed-ms", -1),
                          ("last-ack-value", -1), ("request", ""),
                          ("short-timeout-ms", 3000),
                          ("long-timeout-ms", 120000),
                          ("unmatched-read", 0xffffffff),
                          ("auto-syncrtc", True), ("fault", "none"),
                          ("raise", 0), ("storm", ""),
                          ("storm-interval-us", 1000), ("storm-count", 0)):
            v = get(prop)
            check("qom-get %s == %r" % (prop, val), v == val, v)
        ht = get("host-time-ns")
        check("host-time-ns close to host clock",
              abs(ht - time.time_ns()) < 2_000_000_000, ht)

        r = q.raw("qom-set", path=DEV, property="request", value="bogus")
        check("request=bogus is rejected", "error" in r,
              r.get("error", {}).get("desc", r))
        r = q.raw("qom-set", path=DEV, property="request", value="shutdown")
        check("request=shutdown without DRIVER_OK is rejected", "error" in r,
              r.get("error", {}).get("desc", r))
        r = q.raw("qom-set", path=DEV, property="command", value=1)
        check("command is read-only", "error" in r,
              r.get("error", {}).get("desc", r))
        r = q.raw("qom-set", path=DEV, property="fault", value="bogus")
        check("fault=bogus is rejected", "error" in r and
              get("fault") == "none", r.get("error", {}).get("desc", r))
        r = q.raw("qom-set", path=DEV, property="features", value=3)
        check("features is writable at run time",
              "return" in r and get("features") == 3, r)

        r = q.raw("qom-set", path=DEV, property="request", value="stop")
        check("request=stop accepted", "return" in r, r)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        check("QEMU exited after stop without driver", rc is not None, rc)
        q.drain_events(1)
        sd = [e for e in q.events if e["event"] == "SHUTDOWN"]
        check("QMP SHUTDOWN event", len(sd) == 1,
              sd[0]["data"] if sd else q.events)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(errlog) as f:
        stderr = f.read()
    if args.verbose:
        sys.stdout.write(stderr)
    line = [ln for ln in stderr.splitlines() if ln.startswith("vmmci: ")]
    check("stderr reports end-reason=stop-without-driver",
          any("end-reason=stop-without-driver" in ln for ln in line),
          line[0] if line else stderr.strip())

    if failures:
        print("smoke: %d check(s) FAILED" % len(failures))
        return 1
    print("smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
