#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Register-level test of the vmmci QEMU device model, without a guest.

Runs qemu-system-x86_64 with the qtest accelerator (-accel qtest): this
script plays the guest CPU (port I/O, PCI config cycles via 0xcf8/0xcfc,
the 0xcf9 reset register) and owns QEMU_CLOCK_VIRTUAL (clock_step), while
QMP drives host requests and reads the observation properties.  INTx is
watched both through the PCI status register (bit 3) and by intercepting
the IOAPIC input the PIIX3 routes the device's PIRQ to.

Covers spec requirements M1-M19 (M19: migration to a file and back) and
the fault-injection properties (fault, raise, storm, run-time features and
status).
Takes about 20 s.  --qemu / $VMMCI_QEMU / scripts/build-qemu select the
binary, as in smoke.py.  Exit status 0 if every check passed.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "ci", "e2e"))

from harness import FIRMWARE, Qmp, build_qemu  # noqa: E402
DEV = "/machine/peripheral/vmmci0"
BAR = 0xc000
IRQ = 11
POISON = 0x5aa5c33c

FAILURES = []


def check(what, cond, detail=""):
    print("%s %s%s" % ("ok  " if cond else "FAIL", what,
                       (": " + str(detail)) if detail != "" else ""))
    if not cond:
        FAILURES.append(what)
    return cond


class Vm:
    """One QEMU process with a qtest and a QMP connection."""

    def __init__(self, qemu, tmp, name, devopts="", extra=(), qtest=True):
        self.tmp = tmp
        self.name = name
        qt_path = os.path.join(tmp, name + "-qtest.sock")
        qmp_path = os.path.join(tmp, name + "-qmp.sock")
        self.errlog = os.path.join(tmp, name + "-stderr.log")
        dev = "vmmci,id=vmmci0,unmatched-read=%d" % POISON
        if devopts:
            dev += "," + devopts
        cmd = [qemu, "-M", "pc", "-nodefaults", "-display", "none",
               *FIRMWARE, "-qmp", "unix:%s,server=on,wait=off" % qmp_path,
               "-device", dev, *extra]
        self.qt = None
        if qtest:
            lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            lsn.bind(qt_path)
            lsn.listen(1)
            cmd += ["-accel", "qtest", "-qtest", "unix:" + qt_path,
                    "-qtest-log", "/dev/null"]
        with open(self.errlog, "w") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
        if qtest:
            lsn.settimeout(30)
            self.qt, _ = lsn.accept()
            lsn.close()
            self.qt.settimeout(30)
        self.qtbuf = b""
        self.irq_log = []
        self.irq_level = {}
        self._qmp_connect(qmp_path)
        self.slot = None

    # -- QMP --
    def _qmp_connect(self, path):
        self.qmpc = Qmp(path)
        self.events = self.qmpc.events

    def qmp_raw(self, name, **args):
        return self.qmpc.raw(name, **args)

    def qmp_cmd(self, name, **args):
        return self.qmpc.cmd(name, **args)

    def get(self, prop):
        return self.qmp_cmd("qom-get", path=DEV, property=prop)

    def set(self, prop, value):
        return self.qmp_raw("qom-set", path=DEV, property=prop, value=value)

    def request(self, what):
        return self.set("request", what)

    def drain_events(self, timeout=0.2):
        self.qmpc.drain_events(timeout)

    # -- qtest --
    def q(self, line):
        self.qt.sendall(line.encode() + b"\n")
        while True:
            while b"\n" not in self.qtbuf:
                data = self.qt.recv(65536)
                if not data:
                    raise EOFError("qtest closed")
                self.qtbuf += data
            resp, self.qtbuf = self.qtbuf.split(b"\n", 1)
            resp = resp.decode()
            if resp.startswith("IRQ "):
                _, what, num = resp.split()
                self.irq_log.append((what, int(num)))
                self.irq_level[int(num)] = what == "raise"
                continue
            if resp.startswith("OK"):
                rest = resp[2:].strip()
                return int(rest, 0) if rest else None
            raise RuntimeError("qtest %r: %s" % (line, resp))

    def outb(self, port, v):
        self.q("outb 0x%x 0x%x" % (port, v))

    def outw(self, port, v):
        self.q("outw 0x%x 0x%x" % (port, v))

    def outl(self, port, v):
        self.q("outl 0x%x 0x%x" % (port, v))

    def inb(self, port):
        return self.q("inb 0x%x" % port)

    def inw(self, port):
        return self.q("inw 0x%x" % port)

    def inl(self, port):
        return self.q("inl 0x%x" % port)

    def clock_step(self, ns):
        return self.q("clock_step %d" % ns)

    # -- PCI config (bus 0) --
    def _cfg(self, slot, off):
        self.outl(0xcf8, 0x80000000 | (slot << 11) | (off & 0xfc))
        return 0xcfc + (off & 3)

    def cfg_rl(self, slot, off):
        return self.inl(self._cfg(slot, off))

    def cfg_rw(self, slot, off):
        return self.inw(self._cfg(slot, off))

    def cfg_rb(self, slot, off):
        return self.inb(self._cfg(slot, off))

    def cfg_wl(self, slot, off, v):
        self.outl(self._cfg(slot, off), v)

    def cfg_ww(self, slot, off, v):
        self.outw(self._cfg(slot, off), v)

    def cfg_wb(self, slot, off, v):
        self.outb(self._cfg(slot, off), v)

    def find(self):
        for slot in range(32):
            if self.cfg_rl(slot, 0) == 0x07770b5d:
                self.slot = slot
                return slot
        raise RuntimeError("vmmci not found on bus 0")

    def setup(self):
        """What firmware would do: BAR0, I/O enable, PIRQ -> IRQ 11."""
        s = self.find()
        self.cfg_wl(s, 0x10, BAR)
        self.cfg_ww(s, 0x04, 0x0001)
        pirq = (0 + s - 1) & 3          # piix3 pci_slot_get_pirq, INTA
        self.cfg_wb(1, 0x60 + pirq, IRQ)  # PIIX3 (00:01.0) PIRQRC
        self.cfg_wb(s, 0x3c, IRQ)
        self.q("irq_intercept_in ioapic")

    def intx(self):
        """INTx level as the PCI core sees it (status bit 3)."""
        return bool(self.cfg_rw(self.slot, 0x06) & 0x08)

    def irq(self):
        return self.irq_level.get(IRQ, False)

    def driver_ok(self, features=7):
        self.outb(BAR + 18, 0x00)       # reset
        self.outb(BAR + 18, 0x01)       # ACK
        self.outb(BAR + 18, 0x03)       # DRIVER
        self.outl(BAR + 4, features)
        self.outb(BAR + 18, 0x07)       # DRIVER_OK

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr(self):
        with open(self.errlog) as f:
            return f.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for s in (self.qt, self.qmpc.sock):
            try:
                if s:
                    s.close()
            except OSError:
                pass


def test_config_space(vm):
    print("# M1 config space")
    s = vm.find()
    check("vendor/device 0b5d:0777", vm.cfg_rl(s, 0x00) == 0x07770b5d)
    check("command register 0 at reset", vm.cfg_rw(s, 0x04) == 0,
          hex(vm.cfg_rw(s, 0x04)))
    check("status register 0 (no CAPLIST)", vm.cfg_rw(s, 0x06) == 0,
          hex(vm.cfg_rw(s, 0x06)))
    check("revision 0, class 07/80/00",
          vm.cfg_rl(s, 0x08) == 0x07800000, hex(vm.cfg_rl(s, 0x08)))
    check("header type 0", vm.cfg_rb(s, 0x0e) == 0)
    check("BAR0 is I/O", vm.cfg_rl(s, 0x10) & 1 == 1,
          hex(vm.cfg_rl(s, 0x10)))
    vm.cfg_wl(s, 0x10, 0xffffffff)
    check("BAR0 sizing reads 0xfffff001", vm.cfg_rl(s, 0x10) == 0xfffff001,
          hex(vm.cfg_rl(s, 0x10)))
    for bar in range(1, 6):
        off = 0x10 + 4 * bar
        vm.cfg_wl(s, off, 0xffffffff)
        check("BAR%d sizing reads 0" % bar, vm.cfg_rl(s, off) == 0,
              hex(vm.cfg_rl(s, off)))
    check("subsystem 0b5d:ffff", vm.cfg_rl(s, 0x2c) == 0xffff0b5d,
          hex(vm.cfg_rl(s, 0x2c)))
    vm.cfg_wl(s, 0x30, 0xfffff801)
    check("expansion ROM 0, writes discarded", vm.cfg_rl(s, 0x30) == 0,
          hex(vm.cfg_rl(s, 0x30)))
    check("capability pointer 0", vm.cfg_rb(s, 0x34) == 0)
    check("interrupt pin INTA", vm.cfg_rb(s, 0x3d) == 1)
    vm.setup()
    check("BAR0 programmed", vm.cfg_rl(s, 0x10) == BAR | 1,
          hex(vm.cfg_rl(s, 0x10)))


def test_registers(vm):
    print("# M2-M9, M17, M18 registers")
    b = BAR
    check("M7 TIME_USEC reads 0 before any latch", vm.inl(b + 32) == 0)
    check("M2 DEVICE_FEATURES = 7", vm.inl(b + 0) == 7)
    vm.outl(b + 0, 0)
    check("M2 DEVICE_FEATURES write ignored", vm.inl(b + 0) == 7)
    vm.outl(b + 4, 0x12345678)
    check("M3 GUEST_FEATURES stored verbatim (not masked)",
          vm.inl(b + 4) == 0x12345678, hex(vm.inl(b + 4)))
    vm.outl(b + 8, 0xdeadbeef)
    check("M3 QUEUE_PFN r/w", vm.inl(b + 8) == 0xdeadbeef)
    check("M3 QUEUE_SIZE reads 0", vm.inw(b + 12) == 0)
    vm.outw(b + 12, 0x100)
    check("M3 QUEUE_SIZE write ignored", vm.inw(b + 12) == 0)
    vm.outw(b + 14, 0xabcd)
    check("M3 QUEUE_SELECT r/w", vm.inw(b + 14) == 0xabcd)
    vm.outl(b + 14, 0x1234ffff)
    check("M3 QUEUE_SELECT truncated to 16 bit", vm.inl(b + 14) == 0xffff,
          hex(vm.inl(b + 14)))
    n_irq = len(vm.irq_log)
    vm.outw(b + 16, 0x0000)
    check("M3 QUEUE_NOTIFY r/w", vm.inw(b + 16) == 0)
    vm.outb(b + 18, 0x0f)
    check("M3 DEVICE_STATUS r/w", vm.inb(b + 18) == 0x0f)
    check("M3 DEVICE_STATUS 32-bit read = zero-extended byte",
          vm.inl(b + 18) == 0x0f, hex(vm.inl(b + 18)))
    vm.outl(b + 18, 0xffffff03)
    check("M3 DEVICE_STATUS truncated to 8 bit", vm.inb(b + 18) == 0x03)
    check("M17 no interrupt from notify/status writes",
          len(vm.irq_log) == n_irq and not vm.intx())
    vm.outb(b + 19, 0x02)
    check("M5 ISR write ignored", vm.inb(b + 19) == 0 and not vm.intx())

    print("# M8 widths and unmatched offsets")
    vm.outw(b + 4, 0x0004)
    check("M9 narrow GUEST_FEATURES write is zero-extended",
          vm.inl(b + 4) == 4, hex(vm.inl(b + 4)))
    vm.outl(b + 4, 0xa1b2c3d4)
    check("M8 inb at 4 = low byte", vm.inb(b + 4) == 0xd4)
    check("M8 inw at 4 = low 16 bits", vm.inw(b + 4) == 0xc3d4)
    for off, width, expect in ((21, 1, POISON & 0xff),
                               (22, 2, POISON & 0xffff),
                               (5, 1, POISON & 0xff),
                               (13, 1, POISON & 0xff),
                               (17, 2, POISON & 0xffff),
                               (25, 2, POISON & 0xffff),
                               (40, 4, POISON),
                               (0x800, 4, POISON),
                               (0xffc, 4, POISON),
                               (0xfff, 1, POISON & 0xff)):
        v = {1: vm.inb, 2: vm.inw, 4: vm.inl}[width](b + off)
        check("M8/M18 %d-byte read at unmatched %d = unmatched-read"
              % (width, off), v == expect, hex(v))
    vm.outl(b + 4, 0)
    vm.outl(b + 40, 0x3)
    vm.outb(b + 21, 0x3)
    vm.outl(b + 24, 0x12345678)
    check("M18 writes to unmatched / time offsets have no effect",
          vm.inl(b + 20) == 0 and vm.inl(b + 4) == 0 and
          vm.inl(b + 28) == 0)

    print("# M6/M7 time latch")
    t0 = time.time()
    sec = vm.inl(b + 24)
    usec = vm.inl(b + 32)
    t1 = time.time()
    check("M6 TIME_SEC = host seconds mod 2^32",
          int(t0) - 1 <= sec <= int(t1) + 1, (sec, t0))
    check("M7 TIME_USEC in 0..999999", 0 <= usec <= 999999, usec)
    check("M6 latched value within 50 ms of host time",
          abs(sec + usec / 1e6 - (t0 + t1) / 2) < 0.05,
          sec + usec / 1e6 - (t0 + t1) / 2)
    check("M7 TIME_SEC high / TIME_USEC high read 0",
          vm.inl(b + 28) == 0 and vm.inl(b + 36) == 0)
    time.sleep(0.05)
    check("M7 TIME_USEC is stable without a new latch",
          vm.inl(b + 32) == usec)
    lo = vm.inw(b + 24)
    usec2 = vm.inl(b + 32)
    check("M8 16-bit read at 24 latches and returns low 16 bits",
          usec2 != usec and lo == (int(time.time()) & 0xffff), (lo, usec2))
    vm.set("host-offset-ns", 1000 * 10**9 + 250 * 10**6)
    sec = vm.inl(b + 24)
    usec = vm.inl(b + 32)
    d = sec + usec / 1e6 - time.time()
    check("host-offset-ns shifts the latched time", 999.9 < d < 1000.4, d)
    vm.set("host-offset-ns", 0)
    h0 = vm.get("host-time-ns")
    r = vm.set("host-skew-ppb", 100_000_000)    # +10 %
    h1 = vm.get("host-time-ns")
    check("host-skew-ppb change does not jump the clock",
          "return" in r and 0 <= h1 - h0 < 50_000_000, (r, h1 - h0))
    t0 = time.time_ns()
    time.sleep(1.0)
    h2 = vm.get("host-time-ns")
    t1 = time.time_ns()
    rate = (h2 - h1) / (t1 - t0)
    check("host-skew-ppb=1e8 runs the clock 10 % fast", 1.07 < rate < 1.13,
          rate)
    vm.set("host-skew-ppb", 0)
    h3 = vm.get("host-time-ns")
    check("host time keeps the accumulated skew",
          0.08e9 < h3 - time.time_ns() < 0.2e9, h3 - time.time_ns())
    vm.set("host-offset-ns", -(h3 - time.time_ns()))
    check("host-offset-ns can cancel it",
          abs(vm.get("host-time-ns") - time.time_ns()) < 20_000_000)


def test_requests(vm):
    print("# M10-M12, M17 host requests and acks")
    b = BAR
    vm.outb(b + 18, 0)
    for req in ("syncrtc", "shutdown", "reboot"):
        r = vm.request(req)
        check("request=%s refused without DRIVER_OK" % req, "error" in r,
              r.get("error", {}).get("desc", r))
    check("nothing raised without DRIVER_OK",
          vm.get("raise-count") == 0 and vm.inl(b + 20) == 0)

    vm.driver_ok(features=3)            # no SYNCRTC bit
    check("driver-ok property", vm.get("driver-ok") is True)
    r = vm.request("syncrtc")
    check("M11 SYNCRTC without guest feature bit 2: nothing",
          "return" in r and vm.get("raise-count") == 0 and
          vm.inl(b + 20) == 0 and not vm.intx())
    vm.outl(b + 4, 7)
    n_irq = len(vm.irq_log)
    r = vm.request("syncrtc")
    check("M11 SYNCRTC raised", vm.inl(b + 20) == 3 and
          vm.get("isr") == 2 and vm.get("raise-count") == 1, r)
    check("M5 INTx asserted (PCI status bit 3)", vm.intx())
    check("INTx reaches IOAPIC pin %d" % IRQ, vm.irq(), vm.irq_log[n_irq:])
    check("M11 SYNCRTC arms no timer", vm.get("timer-armed-ms") == -1)
    check("raise-time-ns recent",
          abs(vm.get("raise-time-ns") - time.time_ns()) < 2e9)
    vm.request("syncrtc")
    check("M11 same-value request suppressed", vm.get("raise-count") == 1)
    check("M5 ISR read (inw at 19) returns 2", vm.inw(b + 19) == 2)
    check("M5 ISR cleared and INTx lowered by the read",
          vm.inb(b + 19) == 0 and not vm.intx() and not vm.irq() and
          vm.get("isr") == 0)
    n_irq = len(vm.irq_log)
    vm.outl(b + 20, 3)
    check("M12 ack 3 clears COMMAND", vm.inl(b + 20) == 0)
    check("M17 no interrupt on the ack", len(vm.irq_log) == n_irq)
    check("last-ack-value / last-ack-ns",
          vm.get("last-ack-value") == 3 and
          abs(vm.get("last-ack-ns") - time.time_ns()) < 2e9)

    vm.request("reboot")
    t = vm.get("timer-armed-ms")
    check("M11 REBOOT: COMMAND=2, ISR=2, INTx, 3 s timer",
          vm.inl(b + 20) == 2 and vm.get("isr") == 2 and vm.intx() and
          2500 < t <= 3000, t)
    check("stop-pending after reboot request", vm.get("stop-pending"))
    vm.inb(b + 19)
    vm.request("shutdown")
    check("M11 last writer wins: SHUTDOWN replaces REBOOT",
          vm.inl(b + 20) == 1 and vm.get("isr") == 2 and
          vm.get("raise-count") == 3)
    vm.inb(b + 19)
    vm.outb(b + 18, 0)
    check("M4 DEVICE_STATUS=0 keeps COMMAND and timer",
          vm.inl(b + 20) == 1 and vm.get("timer-armed-ms") > 0 and
          vm.inb(b + 18) == 0)
    vm.outb(b + 18, 7)
    vm.outl(b + 20, 2)
    t = vm.get("timer-armed-ms")
    check("M12 ack 2 while COMMAND=1 does nothing", 0 < t <= 3000, t)
    vm.outl(b + 20, 1)
    t = vm.get("timer-armed-ms")
    check("M12 matching ack 1 arms the long timer", 119000 < t <= 120000, t)
    check("M12 COMMAND still 1 after the ack", vm.inl(b + 20) == 1)
    vm.outl(b + 20, 0)
    vm.outl(b + 20, 7)
    check("M12 ack 0 / illegal 7: no change",
          vm.inl(b + 20) == 1 and vm.get("timer-armed-ms") > 119000)
    vm.outb(b + 20, 3)
    check("M12/M9 (byte) ack 3 clears a pending SHUTDOWN, timer keeps "
          "running", vm.inl(b + 20) == 0 and
          vm.get("timer-armed-ms") > 119000)
    vm.outl(b + 20, 1)
    t = vm.get("timer-armed-ms")
    check("M12 ack 1 with COMMAND=0 arms the short timer (notice)",
          2500 < t <= 3000, t)
    vm.request("reboot")
    vm.outl(b + 20, 2)
    t = vm.get("timer-armed-ms")
    check("M12 matching ack 2 arms the long timer", 119000 < t <= 120000, t)
    acks = vm.get("acks").split(",")
    check("acks history (value:ns, last 16)",
          len(acks) == 8 and [a.split(":")[0] for a in acks[-3:]] ==
          ["3", "1", "2"], acks)
    vm.inb(b + 19)


def test_reset(vm):
    print("# M15 reset, M14 guest reset without pending stop")
    b = BAR
    vm.driver_ok()
    vm.request("syncrtc")
    vm.outl(b + 8, 0x1234)
    vm.outw(b + 14, 3)
    vm.outl(b + 20, 1)                  # COMMAND=3: ignored
    check("M12 ack 1 while COMMAND=3 does nothing",
          vm.get("timer-armed-ms") == -1 and vm.inl(b + 20) == 3)
    vm.outl(b + 20, 3)
    vm.outl(b + 20, 1)                  # COMMAND=0: arms the short timer
    vm.inl(b + 24)
    st = (vm.get("isr"), vm.intx(), vm.get("timer-armed-ms"),
          vm.get("stop-pending"))
    check("state before reset", st[0] == 2 and st[1] and st[2] > 0 and
          not st[3], st)
    vm.outb(0xcf9, 0x06)                # PIIX3 reset control: hard reset
    time.sleep(0.3)
    vm.drain_events()
    ev = [e for e in vm.events if e["event"] in ("RESET", "SHUTDOWN")]
    check("M14 guest reset without a stop is a normal reset",
          vm.proc.poll() is None and ev and ev[-1]["event"] == "RESET",
          ev)
    vm.setup()                          # firmware would redo this
    regs = [vm.inl(b + o) for o in (4, 8, 20, 32)] + \
           [vm.inw(b + 12), vm.inw(b + 14), vm.inw(b + 16),
            vm.inb(b + 18), vm.inb(b + 19)]
    check("M15 registers back to initial values", regs == [0] * 9, regs)
    check("M15 timer cancelled, INTx low",
          vm.get("timer-armed-ms") == -1 and not vm.intx() and
          vm.get("isr") == 0)


def test_autosync(vm):
    print("# M16 auto SYNCRTC")
    b = BAR
    vm.driver_ok()
    vm.inb(b + 19)
    base = vm.get("raise-count")
    vm.clock_step(1_000_000_000)
    check("no SYNCRTC on a normal tick", vm.get("raise-count") == base)
    vm.set("host-offset-ns", vm.get("host-offset-ns") + 3 * 10**9)
    vm.clock_step(1_000_000_000)
    check("no SYNCRTC for a 4 s step (needs > 5 s)",
          vm.get("raise-count") == base)
    vm.set("host-offset-ns", vm.get("host-offset-ns") + 10 * 10**9)
    vm.clock_step(1_000_000_000)
    check("SYNCRTC after a +10 s host clock step",
          vm.get("raise-count") == base + 1 and vm.inl(b + 20) == 3 and
          vm.intx())
    vm.inb(b + 19)
    vm.outl(b + 20, 3)
    vm.set("host-offset-ns", vm.get("host-offset-ns") - 60 * 10**9)
    vm.clock_step(1_000_000_000)
    check("no SYNCRTC after a backward step",
          vm.get("raise-count") == base + 1)
    vm.qmp_cmd("stop")
    time.sleep(6.5)
    vm.qmp_cmd("cont")
    vm.clock_step(1_000_000_000)
    check("SYNCRTC on the first tick after a 6.5 s pause",
          vm.get("raise-count") == base + 2 and vm.inl(b + 20) == 3)
    vm.inb(b + 19)
    vm.outl(b + 20, 3)
    vm.set("auto-syncrtc", False)
    vm.set("host-offset-ns", vm.get("host-offset-ns") + 100 * 10**9)
    vm.clock_step(2_000_000_000)
    check("auto-syncrtc=off: no SYNCRTC", vm.get("raise-count") == base + 2)


def latch(vm):
    """TIME_SEC low (latches), TIME_SEC high, TIME_USEC low, TIME_USEC high."""
    return [vm.inl(BAR + off) for off in (24, 28, 32, 36)]


def test_fault_time(vm):
    print("# fault modes: TIME registers")
    check("fault defaults to none", vm.get("fault") == "none")
    r = vm.set("fault", "time-bogus")
    check("fault=time-bogus rejected, nothing changes",
          "error" in r and vm.get("fault") == "none",
          r.get("error", {}).get("desc", r))

    vm.set("host-offset-ns", 0)
    r = vm.set("fault", "time-usec-invalid")
    sec, hi, usec, uhi = latch(vm)
    check("time-usec-invalid: TIME_USEC = latched us + 1e6",
          "return" in r and vm.get("fault") == "time-usec-invalid" and
          1_000_000 <= usec <= 1_999_999 and hi == 0 and uhi == 0 and
          abs(sec + (usec - 1e6) / 1e6 - time.time()) < 0.1, (sec, usec))
    check("time-usec-invalid: the host clock is unchanged",
          abs(vm.get("host-time-ns") - time.time_ns()) < 50_000_000)

    vm.set("fault", "none")
    usec0 = latch(vm)[2]
    time.sleep(0.02)
    vm.set("fault", "time-sec-zero")
    sec, hi, usec, uhi = latch(vm)
    check("time-sec-zero: TIME_SEC low reads 0, the latch still happens",
          sec == 0 and hi == 0 and uhi == 0 and usec < 1_000_000 and
          usec != usec0, (sec, usec, usec0))

    vm.set("fault", "time-sec-high")
    sec, hi, usec, uhi = latch(vm)
    check("time-sec-high: TIME_SEC high reads 1, the rest is normal",
          hi == 1 and abs(sec - time.time()) < 2 and usec < 1_000_000 and
          uhi == 0, (sec, hi, usec))

    vm.set("fault", "time-backwards")
    t = time.time()
    samples = [latch(vm) for _ in range(4)]
    secs = [x[0] for x in samples]
    check("time-backwards: first latch = host time - 1 s",
          abs(secs[0] + samples[0][2] / 1e6 - (t - 1)) < 0.1, secs[0] - t)
    check("time-backwards: each latch exactly 1 s earlier",
          all(secs[i + 1] == secs[i] - 1 for i in range(3)) and
          len({x[2] for x in samples}) == 1 and
          all(x[1] == 0 and x[3] == 0 and x[2] < 1_000_000
              for x in samples), samples)
    vm.set("fault", "time-backwards")
    sec = latch(vm)[0]
    check("time-backwards: setting the mode again restarts at host - 1 s",
          abs(sec - (time.time() - 1)) < 2, (sec, secs))
    check("time-backwards: the host clock is unchanged",
          abs(vm.get("host-time-ns") - time.time_ns()) < 50_000_000)

    vm.set("fault", "time-random")
    samples = [latch(vm) for _ in range(4)]
    check("time-random: 64-bit seconds and microseconds, all random",
          len({tuple(x) for x in samples}) == 4 and
          any(x[1] for x in samples) and any(x[3] for x in samples) and
          any(x[2] >= 1_000_000 for x in samples),
          [["%08x" % w for w in x] for x in samples])
    usec = vm.inl(BAR + 32)
    check("time-random: TIME_USEC stable without a new latch",
          usec == samples[-1][2])

    vm.set("fault", "none")
    sec, hi, usec, uhi = latch(vm)
    check("fault=none: normal TIME registers again",
          vm.get("fault") == "none" and hi == 0 and uhi == 0 and
          usec < 1_000_000 and
          abs(sec + usec / 1e6 - time.time()) < 0.1, (sec, hi, usec, uhi))


def test_fault_raise(vm):
    print("# fault modes: raw raise")
    b = BAR
    vm.outb(b + 18, 0)
    vm.inb(b + 19)
    n = vm.get("raise-count")
    check("raise reads 0 before any write", vm.get("raise") == 0)
    r = vm.set("raise", 2)
    check("raise=2 without DRIVER_OK: COMMAND=2, ISR=2, INTx",
          "return" in r and vm.inl(b + 20) == 2 and vm.get("isr") == 2 and
          vm.intx() and vm.irq(), r)
    check("raise: raise-count/raise-cmd/raise-time-ns updated",
          vm.get("raise-count") == n + 1 and vm.get("raise-cmd") == 2 and
          abs(vm.get("raise-time-ns") - time.time_ns()) < 2e9)
    check("raise: no timer, no stop pending, reads back 2",
          vm.get("timer-armed-ms") == -1 and not vm.get("stop-pending") and
          vm.get("raise") == 2)
    check("raise: ISR read clears it",
          vm.inb(b + 19) == 2 and not vm.intx() and not vm.irq())
    vm.set("raise", 2)
    check("raise of the current value: spurious interrupt, no change",
          vm.get("raise-count") == n + 2 and vm.inl(b + 20) == 2 and
          vm.intx() and vm.get("isr") == 2)
    vm.inb(b + 19)
    vm.set("raise", 0xdeadbeef)
    check("raise of an illegal command value",
          vm.inl(b + 20) == 0xdeadbeef and vm.get("command") == 0xdeadbeef
          and vm.get("raise-cmd") == 0xdeadbeef and vm.intx())
    r = vm.set("raise", 1 << 32)
    check("raise=2^32 rejected", "error" in r and
          vm.get("raise") == 0xdeadbeef and vm.get("raise-count") == n + 3,
          r.get("error", {}).get("desc", r))
    n_irq = len(vm.irq_log)
    vm.set("raise", 0)
    up = vm.intx()                      # a qtest round trip: IRQ lines read
    check("a raise while ISR is still set interrupts again, as vmd's i8259 "
          "latches every assert: INTx lowered, then raised",
          up and vm.irq_log[n_irq:] == [("lower", IRQ), ("raise", IRQ)],
          vm.irq_log[n_irq:])
    vm.inb(b + 19)
    check("raise=0 clears COMMAND (with an interrupt)",
          vm.inl(b + 20) == 0 and vm.get("raise-count") == n + 4)


def test_fault_storm(vm):
    print("# fault modes: interrupt storm")
    b = BAR
    vm.set("auto-syncrtc", False)
    check("storm defaults", vm.get("storm") == "" and
          vm.get("storm-interval-us") == 1000 and
          vm.get("storm-count") == 0)
    for bad in ("3:", ":", ":3", "3::4", "x", "-1", "+3", " 3", "3 ",
                "0x3", "4294967296", "3,4"):
        r = vm.set("storm", bad)
        check("storm=%r rejected" % bad,
              "error" in r and vm.get("storm") == "",
              "" if "error" in r else r)
    r = vm.set("storm-interval-us", 99)
    check("storm-interval-us=99 rejected",
          "error" in r and vm.get("storm-interval-us") == 1000, r)
    r = vm.set("storm-interval-us", 100)
    check("storm-interval-us=100 accepted",
          "return" in r and vm.get("storm-interval-us") == 100, r)
    vm.set("storm-interval-us", 1000)

    n = vm.get("raise-count")
    r = vm.set("storm", "3:7:0:42")
    check("storm=3:7:0:42 accepted", "return" in r and
          vm.get("storm") == "3:7:0:42" and vm.get("storm-count") == 0, r)
    seen = []
    for _ in range(6):
        vm.clock_step(1_000_000)
        seen.append(vm.inl(b + 20))
    check("storm rotates the values, one raise per interval",
          seen == [3, 7, 0, 42, 3, 7] and vm.get("storm-count") == 6 and
          vm.get("raise-count") == n + 6 and vm.get("raise-cmd") == 7, seen)
    check("storm keeps INTx asserted", vm.intx() and vm.get("isr") == 2)
    r = vm.set("storm", "1:x")
    check("bad storm while one runs: error, storm unchanged",
          "error" in r and vm.get("storm") == "3:7:0:42", r)
    c0 = vm.get("storm-count")
    vm.clock_step(1_000_000_000)
    c1 = vm.get("storm-count")
    check("storm at 1000 us: ~1000 raises per virtual second",
          999 <= c1 - c0 <= 1001, c1 - c0)
    vm.set("storm-interval-us", 500)
    vm.clock_step(1_000_000_000)
    c2 = vm.get("storm-count")
    check("storm-interval-us=500: ~2000 raises per virtual second",
          1999 <= c2 - c1 <= 2001, c2 - c1)
    vm.set("storm-interval-us", 1000)
    check("storm raises are counted in raise-count",
          vm.get("raise-count") - n == c2, (vm.get("raise-count") - n, c2))
    r = vm.set("storm", "")
    n = vm.get("raise-count")
    vm.clock_step(10_000_000)
    check("storm='' stops it, storm-count is kept",
          "return" in r and vm.get("storm") == "" and
          vm.get("raise-count") == n and vm.get("storm-count") == c2, r)
    vm.inb(b + 19)
    vm.set("storm", "5")
    check("a new storm restarts storm-count",
          vm.get("storm-count") == 0 and vm.get("storm") == "5")
    vm.clock_step(3_000_000)
    check("single-value storm: same command, 3 raises",
          vm.get("storm-count") == 3 and vm.inl(b + 20) == 5)


def test_fault_host_state(vm):
    print("# fault modes: features and status from the host")
    b = BAR
    check("features defaults to 7", vm.get("features") == 7 and
          vm.inl(b + 0) == 7)
    r = vm.set("features", 0)
    check("features=0 at run time: DEVICE_FEATURES reads 0",
          "return" in r and vm.inl(b + 0) == 0 and vm.get("features") == 0, r)
    vm.set("features", 5)
    check("features=5 at run time: DEVICE_FEATURES reads 5",
          vm.inl(b + 0) == 5)
    r = vm.set("features", 1 << 32)
    check("features=2^32 rejected", "error" in r and vm.inl(b + 0) == 5, r)
    vm.set("features", 7)

    vm.driver_ok()
    r = vm.set("status", 0)
    check("status=0 from the host clears DRIVER_OK",
          "return" in r and vm.inb(b + 18) == 0 and
          vm.get("driver-ok") is False, r)
    r = vm.request("shutdown")
    check("request=shutdown refused after the host cleared DRIVER_OK",
          "error" in r, r)
    vm.set("status", 7)
    check("status=7 from the host: DRIVER_OK visible",
          vm.inb(b + 18) == 7 and vm.get("driver-ok") is True)
    r = vm.set("status", 256)
    check("status=256 rejected", "error" in r and vm.inb(b + 18) == 7, r)


def test_fault_reset(vm):
    print("# fault modes across a reset")
    vm.set("fault", "time-sec-high")
    vm.set("storm", "3")
    vm.outb(0xcf9, 0x06)
    time.sleep(0.3)
    vm.setup()
    n = vm.get("raise-count")
    vm.clock_step(10_000_000)
    check("reset stops the storm",
          vm.get("storm") == "" and vm.get("raise-count") == n and
          vm.inl(BAR + 20) == 0 and not vm.intx())
    check("fault mode and features survive a reset",
          vm.get("fault") == "time-sec-high" and vm.inl(BAR + 28) == 1 and
          vm.get("features") == 7)
    vm.set("fault", "none")


def test_reset_after_stop(qemu, tmp):
    print("# M14 guest reset while a stop is pending")
    vm = Vm(qemu, tmp, "m14")
    try:
        vm.setup()
        vm.driver_ok()
        vm.request("stop")
        check("stop: COMMAND=2 raised", vm.inl(BAR + 20) == 2 and vm.intx())
        vm.inb(BAR + 19)
        vm.outl(BAR + 20, 2)
        r = vm.request("stop")
        check("second stop is not forwarded", "return" in r and
              vm.get("raise-count") == 1)
        vm.outb(0xcf9, 0x06)
        rc = vm.wait_exit(5)
        check("QEMU exits instead of rebooting", rc is not None, rc)
        vm.drain_events()
        sd = [e["data"] for e in vm.events if e["event"] == "SHUTDOWN"]
        rs = [e for e in vm.events if e["event"] == "RESET"]
        check("SHUTDOWN event reason guest-reset, no RESET",
              sd and sd[0]["reason"] == "guest-reset" and not rs, sd)
        check("stderr: end-reason=reset-after-stop",
              "vmmci: end-reason=reset-after-stop" in vm.stderr(),
              vm.stderr().strip())
    finally:
        vm.close()

    print("# M14 with -no-shutdown: state is still inspectable")
    vm = Vm(qemu, tmp, "m14b", extra=("-no-shutdown",))
    try:
        vm.setup()
        vm.driver_ok()
        vm.request("stop")
        vm.outb(0xcf9, 0x06)
        time.sleep(0.5)
        st = vm.qmp_cmd("query-status")
        check("VM in shutdown state, end-reason=reset-after-stop",
              st["status"] == "shutdown" and
              vm.get("end-reason") == "reset-after-stop", st)
    finally:
        vm.close()


def test_timers(qemu, tmp):
    print("# M13 timer expiry")
    vm = Vm(qemu, tmp, "m13a", "short-timeout-ms=400")
    try:
        vm.setup()
        vm.driver_ok()
        t0 = time.time()
        vm.request("reboot")
        rc = vm.wait_exit(5)
        dt = time.time() - t0
        check("unacked REBOOT: power-off after short-timeout-ms",
              rc is not None and 0.35 < dt < 1.5, dt)
        check("stderr: end-reason=timer-expired",
              "vmmci: end-reason=timer-expired" in vm.stderr(),
              vm.stderr().strip())
    finally:
        vm.close()
    vm = Vm(qemu, tmp, "m13b", "short-timeout-ms=5000,long-timeout-ms=700")
    try:
        vm.setup()
        vm.driver_ok()
        vm.request("shutdown")
        time.sleep(0.5)
        t0 = time.time()
        vm.outl(BAR + 20, 1)
        rc = vm.wait_exit(8)
        dt = time.time() - t0
        check("acked SHUTDOWN: power-off long-timeout-ms after the ack",
              rc is not None and 0.65 < dt < 1.5, dt)
        vm.drain_events()
        check("no RESET happened",
              not [e for e in vm.events if e["event"] == "RESET"])
    finally:
        vm.close()
    vm = Vm(qemu, tmp, "m13c", "short-timeout-ms=300")
    try:
        vm.setup()
        vm.driver_ok()
        t0 = time.time()
        vm.outl(BAR + 20, 1)            # guest power-off notice
        rc = vm.wait_exit(5)
        check("guest power-off notice: power-off after short-timeout-ms",
              rc is not None and time.time() - t0 < 1.5)
    finally:
        vm.close()


def test_migration(qemu, tmp):
    print("# M19 migration")
    f = os.path.join(tmp, "vmstate")
    vm = Vm(qemu, tmp, "mig-src")
    try:
        vm.setup()
        vm.driver_ok(features=5)
        vm.outl(BAR + 8, 0x4242)
        vm.outw(BAR + 14, 7)
        vm.outw(BAR + 16, 9)
        vm.inl(BAR + 24)
        usec = vm.inl(BAR + 32)
        vm.request("stop")
        vm.qmp_cmd("stop")
        vm.qmp_cmd("migrate", uri="exec:cat > " + f)
        for _ in range(100):
            st = vm.qmp_cmd("query-migrate").get("status")
            if st in ("completed", "failed"):
                break
            time.sleep(0.1)
        check("migration to file completed", st == "completed", st)
    finally:
        vm.close()
    vm = Vm(qemu, tmp, "mig-dst", extra=("-incoming", "exec:cat " + f))
    try:
        for _ in range(100):
            st = vm.qmp_cmd("query-migrate").get("status")
            if st in ("completed", "failed"):
                break
            time.sleep(0.1)
        vm.slot = vm.find()
        vals = {p: vm.get(p) for p in ("command", "isr", "guest-features",
                                       "status", "stop-pending",
                                       "timer-armed-ms")}
        check("M19 state restored", st == "completed" and
              vals["command"] == 2 and vals["isr"] == 2 and
              vals["guest-features"] == 5 and vals["status"] == 7 and
              vals["stop-pending"] and 0 < vals["timer-armed-ms"] <= 3000,
              (st, vals))
        check("M19 INTx level and registers restored",
              vm.intx() and vm.inl(BAR + 8) == 0x4242 and
              vm.inw(BAR + 14) == 7 and vm.inw(BAR + 16) == 9 and
              vm.inl(BAR + 32) == usec)
        vm.qmp_cmd("cont")
        rc = vm.wait_exit(6)
        check("M19 restored timer still fires", rc is not None and
              "end-reason=timer-expired" in vm.stderr(), vm.stderr().strip())
    finally:
        vm.close()

# A 512-byte boot sector run by SeaBIOS under TCG: real IN/OUT instructions
# (unaligned inw at ISR, inw at 24, unmatched inl at 22), then it waits for a
# host request, reads ISR/COMMAND, acks with a 32-bit write of the command
# and triple-faults.  Output goes to isa-debugcon (port 0xe9).
BOOT_S = r"""
    .code16
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7c00, %sp
    mov $0x80000000, %ebx
scan:
    mov %ebx, %eax
    mov $0xcf8, %dx
    outl %eax, %dx
    mov $0xcfc, %dx
    inl %dx, %eax
    cmp $0x07770b5d, %eax
    je found
    add $0x800, %ebx
    cmp $0x80010000, %ebx
    jb scan
    mov $'N', %al
    call putc
    jmp die
found:
    mov %ebx, %eax
    or $0x10, %eax
    mov $0xcf8, %dx
    outl %eax, %dx
    mov $0xcfc, %dx
    inl %dx, %eax
    and $0xfffc, %ax
    mov %ax, %si
    mov $'B', %cl
    call put32
    lea 18(%si), %dx            /* DEVICE_STATUS = ACK|DRIVER|DRIVER_OK */
    mov $7, %al
    outb %al, %dx
    lea 4(%si), %dx             /* GUEST_FEATURES = 7 */
    mov $7, %eax
    outl %eax, %dx
    mov $0x11223344, %eax       /* unmatched 32-bit read at 22 */
    lea 22(%si), %dx
    inl %dx, %eax
    mov $'U', %cl
    call put32
    mov $0x11223344, %eax       /* 16-bit read at 24: latch, low 16 bits */
    lea 24(%si), %dx
    inw %dx, %ax
    mov $'T', %cl
    call put32
    lea 32(%si), %dx
    inl %dx, %eax
    mov $'M', %cl
    call put32
    mov $'R', %al               /* ready for the host request */
    call putc
    mov $'\n', %al
    call putc
wait:
    lea 20(%si), %dx
    inl %dx, %eax
    test %eax, %eax
    jz wait
    xor %eax, %eax              /* ISR with an unaligned 16-bit read */
    lea 19(%si), %dx
    inw %dx, %ax
    mov $'I', %cl
    call put32
    xor %eax, %eax
    lea 19(%si), %dx
    inb %dx, %al
    mov $'J', %cl
    call put32
    xor %eax, %eax
    lea 20(%si), %dx
    inb %dx, %al
    mov %eax, %edi
    mov $'C', %cl
    call put32
    mov %edi, %eax
    lea 20(%si), %dx            /* ack: 32-bit write of the command */
    outl %eax, %dx
    mov $'A', %al
    call putc
    mov $'\n', %al
    call putc
    lidt idt0                   /* triple fault */
    int $3
die:
    hlt
    jmp die

put32:                          /* print CL, EAX as 8 hex digits, newline */
    push %eax
    mov %cl, %al
    call putc
    pop %eax
    mov $8, %cx
1:  rol $4, %eax
    push %eax
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe 2f
    add $('a' - '9' - 1), %al
2:  call putc
    pop %eax
    loop 1b
    mov $'\n', %al
putc:
    push %dx
    mov $0xe9, %dx
    outb %al, %dx
    pop %dx
    ret

idt0:
    .word 0
    .long 0
    .org 510
    .byte 0x55, 0xaa
"""


def build_boot_image(tmp):
    src = os.path.join(tmp, "boot.S")
    obj = os.path.join(tmp, "boot.o")
    img = os.path.join(tmp, "boot.img")
    with open(src, "w") as f:
        f.write(BOOT_S)
    try:
        subprocess.run(["as", "--32", "-o", obj, src], check=True)
        subprocess.run(["ld", "-m", "elf_i386", "-Ttext", "0x7c00",
                        "--oformat", "binary", "-o", img, obj], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print("# skipping TCG guest test (binutils: %s)" % e)
        return None
    return img


def parse_debugcon(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def run_boot_guest(qemu, tmp, name, request):
    img = os.path.join(tmp, "boot.img")
    dbg = os.path.join(tmp, name + "-debugcon.txt")
    vm = Vm(qemu, tmp, name, qtest=False,
            extra=("-drive", "file=%s,format=raw,if=ide,snapshot=on" % img,
                   "-chardev", "file,id=dbg,path=" + dbg,
                   "-device", "isa-debugcon,chardev=dbg", "-no-shutdown"))
    try:
        deadline = time.time() + 30
        while "R\n" not in parse_debugcon(dbg) and time.time() < deadline:
            time.sleep(0.1)
        out = parse_debugcon(dbg)
        check("boot sector found the device and set DRIVER_OK",
              "R\n" in out and vm.get("driver-ok"), out.split())
        lines = dict((ln[0], ln[1:]) for ln in out.split() if len(ln) == 9)
        check("TCG: unmatched inl at 22 = unmatched-read",
              lines.get("U") == "%08x" % POISON, lines.get("U"))
        t = int(lines.get("T", "0"), 16)
        check("TCG: inw at 24 = seconds & 0xffff (upper AX bits kept)",
              t >> 16 == 0x1122 and
              abs((t & 0xffff) - (int(time.time()) & 0xffff)) < 30, hex(t))
        r = vm.request(request)
        check("request=%s accepted" % request, "return" in r, r)
        deadline = time.time() + 10
        while "A\n" not in parse_debugcon(dbg) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        vm.drain_events()
        return vm, parse_debugcon(dbg)
    except Exception:
        vm.close()
        raise


def test_tcg_guest(qemu, tmp):
    print("# TCG boot-sector guest (real IN/OUT, triple fault)")
    if not build_boot_image(tmp):
        return
    vm, out = run_boot_guest(qemu, tmp, "tcg-stop", "stop")
    try:
        words = out.split()
        check("TCG: guest saw ISR=2 (unaligned inw at 19), then 0, "
              "COMMAND=2", "I00000002" in words and "J00000000" in words and
              "C00000002" in words, words)
        st = vm.qmp_cmd("query-status")["status"]
        ev = [e["event"] for e in vm.events]
        check("TCG: triple fault after stop powers off (no RESET)",
              st == "shutdown" and "RESET" not in ev and
              vm.get("end-reason") == "reset-after-stop", (st, ev))
        check("TCG: the guest's ack was recorded",
              vm.get("last-ack-value") == 2)
        check("TCG: no late timer after the end",
              vm.get("timer-armed-ms") == -1)
        check("TCG: stderr reports reset-after-stop",
              "vmmci: end-reason=reset-after-stop" in vm.stderr())
    finally:
        vm.close()
    vm, out = run_boot_guest(qemu, tmp, "tcg-sync", "syncrtc")
    try:
        words = out.split()
        time.sleep(1.0)
        out = parse_debugcon(os.path.join(tmp, "tcg-sync-debugcon.txt"))
        vm.drain_events()
        st = vm.qmp_cmd("query-status")["status"]
        ev = [e["event"] for e in vm.events]
        check("TCG: guest saw COMMAND=3 and acked it",
              "C00000003" in words and vm.get("command") == 0, words)
        check("TCG: triple fault without a stop reboots the guest",
              st == "running" and "RESET" in ev and
              out.count("B0000") == 2 and vm.get("end-reason") == "",
              (st, ev, out.split()))
    finally:
        vm.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--qemu", help="qemu-system-x86_64 to test")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (logs)")
    args = ap.parse_args()
    qemu = build_qemu(args.qemu)
    tmp = tempfile.mkdtemp(prefix="vmmci-regtest-")
    print("# qemu %s, logs in %s" % (qemu, tmp))

    vm = Vm(qemu, tmp, "main")
    try:
        test_config_space(vm)
        test_registers(vm)
        test_requests(vm)
    finally:
        vm.close()
    vm = Vm(qemu, tmp, "reset")
    try:
        vm.setup()
        test_reset(vm)
        test_autosync(vm)
    finally:
        vm.close()
    vm = Vm(qemu, tmp, "fault")
    try:
        vm.setup()
        test_fault_time(vm)
        test_fault_raise(vm)
        test_fault_storm(vm)
        test_fault_host_state(vm)
        test_fault_reset(vm)
    finally:
        vm.close()
    test_reset_after_stop(qemu, tmp)
    test_timers(qemu, tmp)
    test_migration(qemu, tmp)
    test_tcg_guest(qemu, tmp)

    if not args.keep and not FAILURES:
        for n in os.listdir(tmp):
            os.unlink(os.path.join(tmp, n))
        os.rmdir(tmp)
    if FAILURES:
        print("regtest: %d check(s) FAILED" % len(FAILURES))
        return 1
    print("regtest: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
