# SPDX-License-Identifier: GPL-2.0
"""End-to-end scenarios: what a vmd user sees, on the patched kernel
booted under QEMU against the vmmci device model.

Every scenario boots its own guest; every guest's console is checked for
kernel splats (KASAN, lockdep, sleeping in atomic context, WARN, BUG,
kmemleak) as a result of its own.
"""

import os
import random
import re
import subprocess
import time
import traceback

import harness
from harness import NS, Guest

# The model's fault modes for the time registers (ci/qemu/README.md)
TIME_FAULTS = ('time-usec-invalid', 'time-sec-zero', 'time-sec-high',
               'time-backwards', 'time-random')
# rmmod/insmod cycles under fire, and the length of the soak: 1 minute
# in the test suite, longer on demand (VMMCI_SOAK_MINUTES)
RELOADS = 100
SOAK_MINUTES = float(os.environ.get('VMMCI_SOAK_MINUTES', 1))

# Loose bound for a clock after SYNCRTC, as seen through the console (a
# round trip is tens of ms under TCG); scripts/bench measures the real one.
SYNC_BOUND_NS = 100 * 1000000
# The bound by the model's test-only time probe (time-probe=on), which
# shares neither the device's time registers nor the driver's estimator:
# SYNCRTC residual, drift error, chrony on the PTP clock
REF_BOUND_NS = 1000000
# What the driver logs if the host did not end the VM after the guest's
# power-off notice
HALT_MSG = 'host did not end the VM, halting'
ATTRS = ('drift_ns',)
KMEMLEAK = '/sys/kernel/debug/kmemleak'


# What a Debian kernel's initramfs holds besides our modules: its own
# virtio_pci and what the disk needs (built in on newer kernels)
DISTRO_MODULES = ('virtio_pci', 'virtio_blk', 'ext4')
# The scenarios run on a distribution kernel with the DKMS modules
DISTRO_SCENARIOS = ('probe-distro', 'stop', 'syncrtc', 'drift',
                    'guest-poweroff', 'reload-distro', 'bad-device')
# ... of which these need the DKMS package's modules
DISTRO_ONLY = ('probe-distro', 'reload-distro', 'bad-device')
# rmmod/modprobe cycles of both DKMS modules
RELOADS_DISTRO = 20


class Suite:
    def __init__(self, results, base, workdir, label='', append=''):
        self.results = results
        self.base = base
        self.workdir = workdir
        self.label = label
        # Kernel command line words every guest of the suite gets
        self.append = append
        self.qemu = None
        self.kernels = {}
        self.distro = False
        self.guests = []

    def check(self, name, ok, detail=''):
        self.results.record(self.label + name, bool(ok), detail)
        return ok

    def prepare(self, kinds=('unpatched', 'm', 'y')):
        """Build QEMU with the model and the guest kernels: unpatched, the
        driver as a module (m) and built in (y)."""
        self.qemu = harness.build_qemu()
        # In this order the one build directory goes from fewer to more
        # patches, and only what changed is rebuilt (scripts/test builds
        # the upstream base's last with the driver =y).
        variants = {'unpatched': (0, []), 'm': (None, ['vmmci-m']),
                    'y': (None, ['vmmci-y'])}
        for kind in ('unpatched', 'y', 'm'):
            if kind in kinds:
                upto, configs = variants[kind]
                self.kernels[kind] = harness.build_kernel(
                    kind, self.base, upto, configs)

    def prepare_distro(self, kver, modules):
        """QEMU, and Debian's own kernel KVER (its package, unpacked) with
        the DKMS-built modules: every scenario boots it."""
        self.qemu = harness.build_qemu()
        kernel = harness.distro_kernel('debian-' + kver, kver, modules,
                                       DISTRO_MODULES)
        self.kernels = {'m': kernel, 'y': kernel}
        self.distro = True

    def model_tests(self):
        """The model's own tests, without a Linux guest."""
        for test in ('smoke.py', 'regtest.py'):
            res = subprocess.run(
                ['python3', os.path.join(harness.TOP, 'ci', 'qemu', test),
                 '--qemu', self.qemu], stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
            fails = [l for l in res.stdout.splitlines()
                     if l.startswith('FAIL')]
            self.check('model: ci/qemu/%s' % test, res.returncode == 0,
                       '\n'.join(fails) or res.stdout)

    def guest(self, name, kernel='y', **kw):
        kw['append'] = ' '.join(filter(None, (self.append,
                                              kw.get('append', ''))))
        g = Guest(self.qemu, self.kernels[kernel],
                  os.path.join(self.workdir, name), **kw)
        self.guests.append(g)
        return g

    def finish(self, name, g):
        """Close a guest and check its console for splats."""
        g.close()
        bad = g.splats()
        self.check('%s: no kernel splat in the console' % name, not bad,
                   '\n'.join(bad[:20]) + '\nconsole: ' + g.path('console.log'))
        bad = g.device_errors()
        self.check('%s: no vmmci access of a width, offset or value vmd '
                   'would not take' % name, not bad, '\n'.join(bad[:20]))

    def run(self, only=None, skip=()):
        scenarios = [
            ('probe-distro', self.probe_distro),
            ('probe-module', self.probe_module),
            ('probe-builtin', self.probe_builtin),
            ('stop', self.stop),
            ('raw-commands', self.raw_commands),
            ('syncrtc', self.syncrtc),
            ('drift', self.drift),
            ('guest-poweroff', self.guest_poweroff),
            ('no-ack', self.no_ack),
            ('no-driver', self.no_driver),
            ('rebind', self.rebind),
            ('suspend-resume', self.suspend_resume),
            ('faults-time', self.faults_time),
            ('faults-commands', self.faults_commands),
            ('faults-stop-race', self.faults_stop_race),
            ('stop-during-shutdown', self.stop_during_shutdown),
            ('reload-under-fire', self.reload_under_fire),
            ('reload-distro', self.reload_distro),
            ('bad-device', self.bad_device),
            ('transport-debug', self.transport_debug),
            ('soak', self.soak),
            ('ptp-clock', self.ptp_clock),
            ('ptp-chrony', self.ptp_chrony),
        ]
        if not only:
            only = DISTRO_SCENARIOS if self.distro else \
                [n for n, _ in scenarios if n not in DISTRO_ONLY]
        for name, fn in scenarios:
            if name not in only or name in skip:
                continue
            try:
                fn(name)
            except Exception:           # a scenario that breaks is a failure
                self.check('%s: ran to the end' % name, False,
                           traceback.format_exc(limit=-4))
            finally:
                # A scenario that broke off leaves its guest running
                for g in self.guests:
                    g.close()
                self.guests = []

    # helpers

    def boot(self, name, kernel='y', **kw):
        g = self.guest(name, kernel, **kw)
        try:
            g.boot()
        except Exception:
            g.close()
            raise
        return g

    def vdev(self, g):
        """The guest's vmmci virtio device name, e.g. virtio1."""
        out = g.sh('for d in /sys/bus/virtio/devices/*; do '
                   'if [ "$(cat $d/vendor 2>/dev/null)" = 0x0b5d ]; then '
                   'basename $d; fi; done')
        return out.strip()

    def bound_driver(self, g):
        """(the vmmci virtio device, the name of the driver bound to it)."""
        dev = self.vdev(g)
        drv = g.sh('basename $(readlink /sys/bus/virtio/devices/%s/driver)'
                   % dev)
        return dev, drv

    def write_log(self, g, prop):
        """[(value, host ns)] of the guest's writes the model logs in the
        property prop ("value:ns,...": acks, status-log)."""
        return [tuple(int(x) for x in a.split(':'))
                for a in g.get(prop).split(',') if a]

    def last_write(self, g, prop):
        """The host ns of the newest write in prop's log, 0 if none."""
        return max((ns for _, ns in self.write_log(g, prop)), default=0)

    def acks(self, g):
        """[(value, host ns)] of the guest's COMMAND writes."""
        return self.write_log(g, 'acks')

    def wait_sysfs(self, g, attr, want, timeout=15):
        """Read attr until want(value) holds; a read error (ENODATA) or a
        value want cannot parse counts as not yet."""
        return self.wait_value(lambda: g.sysfs(attr, check=False), want,
                               timeout)

    def wait_value(self, read, want, timeout):
        deadline = time.time() + timeout
        val = None
        while time.time() < deadline:
            val = read()
            try:
                if want(val):
                    return val
            except ValueError:
                pass
            time.sleep(0.5)
        return val

    def boot_with_disk(self, name, **kw):
        """Boot a guest with a fresh disk mounted on /mnt."""
        disk = os.path.join(self.workdir, name + '.img')
        harness.make_disk(disk)
        g = self.boot(name, disk=disk, **kw)
        g.sh('mount -t ext4 /dev/vda /mnt')
        return g, disk

    def write_unsynced(self, name, g, disk):
        """Write /mnt/data.txt without syncing it and check, by reading
        the disk image on the host, that it is not on disk yet: what a
        stop then saves is the guest's doing.  Returns the payload."""
        payload = 'written just before vmctl stop %08x\n' % \
            random.getrandbits(32)
        g.sh('echo %s > /mnt/data.txt' % payload.strip())
        early = harness.disk_file(disk, 'data.txt')
        self.check('%s: the file is not on disk before the stop' % name,
                   early != payload, repr(early))
        return payload

    def stop_with_data(self, name, g, disk, during=None):
        """Write a file without syncing it, "vmctl stop", and check that
        the VM ends by an orderly reboot with the file on a clean
        filesystem.  during(g), if given, runs once REBOOT is acked."""
        payload = self.write_unsynced(name, g, disk)
        g.request('stop')
        raised = g.get('raise-time-ns')
        if during:
            deadline = time.time() + 3
            while g.get('last-ack-value') != 2 and time.time() < deadline:
                time.sleep(0.01)
            during(g)
        end = g.wait_end(150)
        acks = self.acks(g)
        ack2 = [ns for v, ns in acks if v == 2 and ns >= raised]
        self.check('%s: REBOOT acked within 3 s' % name,
                   ack2 and ack2[0] - raised < 3 * NS,
                   'acks %s raised %d' % (acks, raised))
        reason = g.end_reason()
        self.check('%s: guest rebooted, model powered off (not killed)' % name,
                   end and reason == 'reset-after-stop',
                   'end-reason %s\n%s' % (reason, g.qemu_log()[-2000:]))
        self.check('%s: VM ended well before 120 s (%.1f s)' %
                   (name, (end - raised) / NS if end else -1),
                   end and end - raised < 60 * NS, '')
        self.finish(name, g)
        self.check_disk(name, disk, payload)

    def check_disk(self, name, disk, payload):
        self.check('%s: data written just before the stop is on disk' % name,
                   harness.disk_file(disk, 'data.txt') == payload,
                   repr(harness.disk_file(disk, 'data.txt')))
        clean, report = harness.disk_clean(disk)
        self.check('%s: filesystem clean' % name, clean, report)

    def kmemleak_start(self, g):
        """Start the scenario's kmemleak window: scan, and forget what is
        suspected so far (the boot's).  kmemleak reports an object only
        once it is 5 s old, hence the wait.  Returns whether kmemleak
        took both commands."""
        out = g.sh('sleep 5; echo scan > %s && echo clear > %s && echo ok'
                   % (KMEMLEAK, KMEMLEAK), timeout=600, check=False)
        return out.strip().endswith('ok')

    def check_kmemleak(self, name, g, started):
        """kmemleak is still enabled and suspects no leak from the window
        kmemleak_start() opened (started is what it returned)."""
        # kmemleak reports objects unreferenced for two scans
        out = g.sh('echo scan > %s && sleep 6 && echo scan > %s && '
                   'cat %s && echo "kmemleak: read"' %
                   (KMEMLEAK, KMEMLEAK, KMEMLEAK), timeout=600, check=False)
        read = out.rstrip().endswith('kmemleak: read')
        disabled = 'Kernel memory leak detector disabled' in g.console()
        self.check('%s: kmemleak enabled and scanning' % name,
                   started and read and not disabled, out[-1000:])
        leaks = out.rstrip()[:-len('kmemleak: read')] if read else ''
        records = leaks.count('unreferenced object')
        self.check('%s: kmemleak suspects no leak since the scenario started '
                   '(%d records)' % (name, records), read and not records,
                   leaks[:3000])

    def step_after(self, g, action, timeout=15):
        """Run action() and wait for the guest clock to be set (nothing
        but the driver sets it in these guests); return (set, the offset
        the driver logged for its step, or None)."""
        count = g.clock_sets()
        mark = len(g.console())
        action()
        stepped = g.wait_clock_set(count, timeout) is not None
        logged = self.wait_value(lambda: g.steps_logged(mark), bool,
                                 5 if stepped else 0)
        return stepped, logged[-1] if logged else None

    def check_jump_fixed(self, g, label, offset):
        """Jump the host clock by offset (auto SYNCRTC): the driver steps
        the guest clock to within SYNC_BOUND_NS of host time."""
        stepped, logged = self.step_after(
            g, lambda: g.set('host-offset-ns', g.offset_ns + offset), 20)
        off, unc = g.clock_offset()
        return self.check('%s: host clock jump fixed by SYNCRTC (offset '
                          '%.1f ms)' % (label, off / 1e6),
                          stepped and abs(off) + unc < SYNC_BOUND_NS,
                          'clock set: %s, step logged: %s' %
                          (stepped, logged))

    # scenarios

    def probe_module(self, name):
        g = self.boot(name, kernel='m')
        dev, drv = self.bound_driver(g)
        mods = g.sh('cat /proc/modules')
        self.check('%s: virtio_vmmci autoloaded from its modalias' % name,
                   'virtio_vmmci' in mods and dev, mods)
        self.check('%s: %s bound to virtio_vmmci' % (name, dev),
                   drv == 'virtio_vmmci', drv)
        # Which interrupt controller delivers the device's interrupt
        irqs = g.sh('grep virtio /proc/interrupts')
        want = 'XT-PIC' if 'noapic' in self.append else 'IO-APIC'
        self.check('%s: the device\'s interrupt comes through the %s' %
                   (name, want), want in irqs, irqs)
        self.check_probed(name, g, dev)
        self.finish(name, g)

    def check_probed(self, name, g, dev):
        """What a bound driver shows: the features vmd offers negotiated,
        the sysfs files there and read-only, drift_ns measured."""
        feats = g.sh('cat /sys/bus/virtio/devices/%s/features' % dev)
        self.check('%s: features as offered (TIMESYNC ACK SYNCRTC)' % name,
                   feats.startswith('111') and g.get('guest-features') == 7
                   and g.get('driver-ok'), feats)
        files = g.sh('ls /sys/bus/virtio/devices/%s/' % dev).split()
        self.check('%s: sysfs files present' % name,
                   all(a in files for a in ATTRS), ' '.join(files))
        drift = self.wait_sysfs(g, 'drift_ns',
                                lambda v: re.match(r'^-?\d+$', v or ''))
        self.check('%s: drift_ns measured at probe' % name,
                   re.match(r'^-?\d+$', drift or ''), drift)
        modes = g.sh('cd /sys/bus/virtio/devices/%s && stat -c %%a %s'
                     % (dev, ' '.join(ATTRS)))
        self.check('%s: sysfs files read-only, root only (0400)' % name,
                   modes.split() == ['400'] * len(ATTRS), modes)

    def pci_dev(self, g):
        """The PCI address of vmd's device (vendor 0x0b5d)."""
        return g.sh('for d in /sys/bus/pci/devices/*; do '
                    'if [ "$(cat $d/vendor)" = 0x0b5d ]; then basename $d; '
                    'fi; done')

    def pci_driver(self, g):
        """The PCI driver bound to vmd's device, or ''."""
        return g.sh('d=/sys/bus/pci/devices/%s; if [ -e $d/driver ]; then '
                    'basename $(readlink $d/driver); fi' % self.pci_dev(g))

    def probe_distro(self, name):
        """A distribution kernel with the DKMS modules: the package's
        transport binds vmd's device, the driver binds the virtio device
        it registers, both autoloaded by modalias; the kernel's own
        virtio_pci, untouched, drives the disk."""
        g, disk = self.boot_with_disk(name)
        self.check('%s: vmd\'s PCI device bound to vmmci_pci' % name,
                   self.pci_driver(g) == 'vmmci_pci', self.pci_driver(g))
        dev, drv = self.bound_driver(g)
        self.check('%s: %s bound to virtio_vmmci' % (name, dev),
                   drv == 'virtio_vmmci', drv)
        # The guest's init loads what the modaliases ask for, as udev does
        # at coldplug: nothing named the two modules
        mods = g.sh('cat /proc/modules')
        self.check('%s: vmmci_pci and virtio_vmmci autoloaded by modalias'
                   % name, re.search(r'^vmmci_pci ', mods, re.M) and
                   re.search(r'^virtio_vmmci ', mods, re.M), mods)
        dep = g.sh('cat /lib/modules/$(uname -r)/modules.dep')
        ours = re.findall(r'^updates/dkms/(\w+)\.ko', dep, re.M)
        self.check('%s: modules.dep: updates/dkms holds vmmci_pci and '
                   'virtio_vmmci only (%s)' % (name, ', '.join(ours)),
                   sorted(ours) == ['virtio_vmmci', 'vmmci_pci'], dep)
        disk_drv = g.sh('basename $(readlink '
                        '/sys/block/vda/device/../driver)')
        self.check('%s: the disk is on the kernel\'s own virtio_pci (%s)' %
                   (name, disk_drv), disk_drv == 'virtio-pci', disk_drv)
        feats = g.sh('cat /sys/bus/virtio/devices/%s/features' % dev)
        self.check('%s: features as offered (TIMESYNC ACK SYNCRTC)' % name,
                   feats.startswith('111') and g.get('driver-ok'), feats)
        drift = self.wait_sysfs(g, 'drift_ns',
                                lambda v: re.match(r'^-?\d+$', v or ''))
        self.check('%s: drift_ns measured at probe' % name,
                   re.match(r'^-?\d+$', drift or ''), drift)
        # O: out-of-tree module; E: unsigned, or signed with a key the
        # kernel does not trust (dkms's own)
        taint = int(g.sh('cat /proc/sys/kernel/tainted'))
        self.check('%s: kernel tainted O and E, as documented (%d)' %
                   (name, taint), taint & (1 << 12) and taint & (1 << 13),
                   g.sh('dmesg | grep -i taint'))
        self.finish(name, g)

    def bad_device(self, name):
        """The package's transport on devices vmd never makes: a memory
        BAR instead of an I/O BAR, no interrupt pin.  Each time a clear
        error, no bind, no virtio device, nothing else breaks (the disk
        works, the modules unload)."""
        for prop, want in (('bar-mmio=on', 'BAR0 is not an I/O BAR'),
                           ('intx=off', 'no interrupt line')):
            label = '%s-%s' % (name, prop.split('=')[0])
            g, disk = self.boot_with_disk(label, device=prop)
            log = g.sh('dmesg | grep vmmci_pci')
            self.check('%s: vmmci_pci says "%s" and binds nothing' %
                       (label, want), want in log and not self.pci_driver(g)
                       and not self.vdev(g), log)
            out = g.sh('echo ok > /mnt/ok && sync && cat /mnt/ok && '
                       'rmmod vmmci_pci && echo unloaded')
            self.check('%s: the disk works, vmmci_pci unloads' % label,
                       out.split() == ['ok', 'unloaded'], out)
            self.finish(label, g)

    def transport_debug(self, name):
        """The DKMS package's transport, dkms/vmmci_pci.c, on the debug
        kernel (KASAN, lockdep, kmemleak), built W=1 against its build
        directory: its error paths on devices vmd never makes (a memory
        BAR, no interrupt pin), then bind, rmmod/insmod x20 with SYNCRTC
        in between, a SYNCRTC raised while it is unloaded, a suspend and
        resume of the devices (reset held in between), a clock jump
        fixed; kmemleak suspects nothing, no splat.  The kernel's virtio_pci,
        which has the series' quirk, binds the device first: the test
        hands it to vmmci_pci with driver_override."""
        kernel = 'y-vmmci-pci'
        self.kernels[kernel] = harness.with_module(
            self.kernels['y'], os.path.join(harness.TOP, 'dkms',
                                            'vmmci_pci.c'),
            os.path.join(self.base, kernel))

        def hand_over(g):
            bdf = self.pci_dev(g)
            return g.sh('d=/sys/bus/pci/devices/%s; '
                        'if [ -e $d/driver ]; then echo %s > $d/driver/unbind; '
                        'fi; echo vmmci_pci > $d/driver_override; '
                        'insmod /lib/modules/extra/vmmci_pci.ko; '
                        'dmesg | grep "vmmci_pci %s"' % (bdf, bdf, bdf))

        for prop, want in (('bar-mmio=on', 'BAR0 is not an I/O BAR'),
                           ('intx=off', 'no interrupt line')):
            label = '%s-%s' % (name, prop.split('=')[0])
            g = self.boot(label, kernel=kernel, device=prop, memory=768)
            leak = self.kmemleak_start(g)
            log = hand_over(g)
            self.check('%s: vmmci_pci says "%s" and binds nothing' %
                       (label, want), want in log and not self.pci_driver(g)
                       and not self.vdev(g), log)
            self.check_kmemleak(label, g, leak)
            self.check('%s: vmmci_pci unloads' % label,
                       g.sh('rmmod vmmci_pci && echo unloaded') ==
                       'unloaded', '')
            self.finish(label, g)

        g = self.boot(name, kernel=kernel, memory=768)
        leak = self.kmemleak_start(g)
        hand_over(g)
        dev, drv = self.bound_driver(g)
        self.check('%s: vmmci_pci bound, %s bound to virtio_vmmci' %
                   (name, dev), self.pci_driver(g) == 'vmmci_pci' and
                   drv == 'virtio_vmmci', drv)
        failures = []
        for i in range(RELOADS_DISTRO):
            out = g.sh('rmmod vmmci_pci && '
                       'insmod /lib/modules/extra/vmmci_pci.ko && echo ok')
            g.request('syncrtc')
            dev, drv = self.bound_driver(g)
            if out != 'ok' or drv != 'virtio_vmmci':
                failures.append('%d: %s %s' % (i, out, drv))
        self.check('%s: rmmod/insmod of vmmci_pci x%d with SYNCRTC in '
                   'between, bound each time' % (name, RELOADS_DISTRO),
                   not failures, '\n'.join(failures))
        self.raise_while_unloaded(
            name, g, 'vmmci_pci', 'rmmod vmmci_pci',
            'insmod /lib/modules/extra/vmmci_pci.ko')
        self.suspend_devices(name, g)
        self.check('%s: DRIVER_OK set again after a suspend and resume' %
                   name, g.get('driver-ok'), '')
        self.check_jump_fixed(g, '%s: after resume' % name, 30 * NS)
        self.check_kmemleak(name, g, leak)
        self.finish(name, g)

    def reload_distro(self, name):
        """rmmod and modprobe of both DKMS modules, RELOADS_DISTRO times,
        each time bound again, with a SYNCRTC in between; then a host clock
        jump is still fixed, a SYNCRTC raised while the modules are out
        leaves the device able to interrupt, and a stop is clean."""
        g, disk = self.boot_with_disk(name)
        failures = []
        for i in range(RELOADS_DISTRO):
            out = g.sh('rmmod virtio_vmmci && rmmod vmmci_pci && '
                       'modprobe vmmci_pci && modprobe virtio_vmmci && '
                       'echo reloaded')
            g.request('syncrtc')
            dev, drv = self.bound_driver(g)
            if out != 'reloaded' or drv != 'virtio_vmmci' or \
                    self.pci_driver(g) != 'vmmci_pci':
                failures.append('%d: %s %s' % (i, out, drv))
        self.check('%s: rmmod/modprobe of virtio_vmmci and vmmci_pci x%d, '
                   'bound each time' % (name, RELOADS_DISTRO),
                   not failures, '\n'.join(failures))
        self.check_jump_fixed(g, '%s: after the reloads' % name, 30 * NS)
        self.raise_while_unloaded(
            name, g, 'vmmci_pci', 'rmmod virtio_vmmci && rmmod vmmci_pci',
            'modprobe vmmci_pci && modprobe virtio_vmmci')
        self.stop_with_data(name, g, disk)

    def probe_builtin(self, name):
        g = self.boot(name)
        dev, drv = self.bound_driver(g)
        self.check('%s: %s bound to virtio_vmmci' % (name, dev),
                   drv == 'virtio_vmmci', drv)
        self.check_probed(name, g, dev)
        self.finish(name, g)

        # The negative control of finish()'s check of the accesses: a
        # 16-bit read of the config space, which the driver never makes
        g = self.boot(name + '-narrow')
        g.sh('vmmci-guest narrow-read 26')
        g.close()
        self.check('%s: a 16-bit config read shows in that check' % name,
                   g.device_errors(), g.path('guest_errors.log'))

    def stop(self, name):
        g, disk = self.boot_with_disk(name)
        self.stop_with_data(name, g, disk)

    def raw_commands(self, name):
        # REBOOT, then SHUTDOWN while the reboot is under way: both acked
        # (so vmd keeps waiting), acted on once.
        g = self.boot(name)
        g.request('reboot')
        time.sleep(0.3)
        g.request('shutdown')
        end = g.wait_end(150)
        acks = self.acks(g)
        con = g.console()
        self.check('%s: REBOOT then SHUTDOWN both acked' % name,
                   [v for v, _ in acks][:2] == [2, 1], str(acks))
        self.check('%s: acted on once' % name,
                   con.count('host requested a reboot') == 1 and
                   'host requested a shutdown' not in con and
                   'already stopping' in con,
                   '\n'.join(l for l in con.splitlines() if 'vmmci' in l))
        self.check('%s: guest rebooted cleanly' % name,
                   end and g.end_reason() == 'reset-after-stop' and
                   'filesystems unmounted' in con, g.end_reason())
        self.finish(name, g)

        # SHUTDOWN alone: acked, orderly power-off.  vmd keeps the command
        # at 1 after the ack, so the guest's power-off notice re-arms the
        # long timer: the VM ends when it expires (shortened here, but not
        # below the guest's 4 s wait before it halts, which TCG stretches).
        g = self.boot(name + '-shutdown', device='long-timeout-ms=15000')
        g.request('shutdown')
        end = g.wait_end(60)
        acks = self.acks(g)
        con = g.console()
        self.check('%s: SHUTDOWN acked within 3 s, guest powered off, '
                   'then halted waiting for the host' % name,
                   acks and acks[0][0] == 1 and
                   acks[0][1] - g.get('raise-time-ns') < 3 * NS and
                   'filesystems unmounted' in con and end and
                   HALT_MSG in con and g.end_reason() == 'timer-expired',
                   '%s %s' % (acks, g.end_reason()))
        self.finish(name + '-shutdown', g)

    def syncrtc(self, name):
        g = self.boot(name, device='time-probe=on')
        # The first step after boot runs code the guest never ran, which
        # TCG translates then, between the driver's clock read and the
        # step: the first measured step was 41 to 181 us behind in ten
        # runs (once 2.7 ms, beside kernel builds), the later ones 1 to
        # 28 us.  vmd runs guests on the CPU: step once, unmeasured, by
        # 10 ms (beyond the driver's no-step bound, below the model's auto
        # SYNCRTC).
        g.set('host-offset-ns', g.offset_ns + 10 * 1000000)
        self.step_after(g, lambda: g.request('syncrtc'), 20)
        steps = [(90 * NS, 'auto'), (-90 * NS, 'explicit'),
                 (86400 * NS, 'auto')]
        for offset, how in steps:
            label = '%s: host %+d s (%s SYNCRTC)' % (name, offset // NS, how)
            # guest - host before the jump; the step must undo it too
            before, _ = g.clock_offset(3)
            want = offset - g.offset_ns - before
            count, mark = g.clock_sets(), len(g.console())
            g.set('host-offset-ns', offset)
            if how == 'explicit':
                g.request('syncrtc')
            if not self.check(label + ': guest clock set',
                              g.wait_clock_set(count, 20) is not None,
                              ''):
                continue
            off, unc = g.clock_offset()
            self.check('%s: guest within %d ms of host (%.1f +- %.1f ms)' %
                       (label, SYNC_BOUND_NS // 1000000, off / 1e6, unc / 1e6),
                       abs(off) + unc < SYNC_BOUND_NS, '')
            ref, ref_unc = g.ref_offset()
            reg, reg_unc = g.probe()
            self.check('%s: guest within %d ms of host by the time probe '
                       '(%.1f us +- %.1f; by the time registers %.1f us +- '
                       '%.1f, difference %.1f us)' %
                       (label, REF_BOUND_NS // 1000000, ref / 1e3,
                        ref_unc / 1e3, reg / 1e3, reg_unc / 1e3,
                        (reg - ref) / 1e3),
                       abs(ref) + ref_unc < REF_BOUND_NS, '')
            logged = self.wait_value(lambda: g.steps_logged(mark), bool, 5)
            self.check('%s: the offset logged for the step matches the '
                       'jump' % label,
                       len(logged) == 1 and
                       abs(logged[0] - want) < SYNC_BOUND_NS,
                       'logged %s, expected %d' % (logged, want))
        log = [l for l in g.console().splitlines() if 'clock stepped' in l]
        self.check('%s: each step logged with its offset' % name,
                   len(log) >= len(steps), '\n'.join(log))
        # The negative control of the time probe's check: time registers
        # 5 ms late.  The driver steps to what they say and a probe of the
        # same registers agrees with it; the time probe must see the 5 ms.
        label = '%s: registers 5 ms late (time-stale-5ms)' % name
        g.set('fault', 'time-stale-5ms')
        g.set('host-offset-ns', g.offset_ns + 30 * NS)
        stepped, _ = self.step_after(g, lambda: g.request('syncrtc'), 20)
        ref, ref_unc = g.ref_offset()
        reg, reg_unc = g.probe()
        g.set('fault', 'none')
        self.check('%s: the time probe sees the guest 5 ms behind, the '
                   'registers do not (probe %.3f ms, registers %.3f ms)' %
                   (label, ref / 1e6, reg / 1e6),
                   stepped and abs(ref + 5 * 1000000) < REF_BOUND_NS and
                   abs(reg) < REF_BOUND_NS, '')
        self.finish(name, g)

    def drift_ref(self, g, label):
        """Read drift_ns, then the time probe: they must agree within
        REF_BOUND_NS.  Returns drift_ns."""
        reads = g.drift_read(1)
        if not reads:
            raise RuntimeError('drift_ns had no valid measurement')
        r = reads[0]
        d, ref, ref_unc = r['drift'], r['ref'], r['ref_bound']
        self.check('%s: drift_ns within %d ms of the time probe (drift_ns '
                   '%.1f us, probe %.1f us +- %.1f)' %
                   (label, REF_BOUND_NS // 1000000, d / 1e3,
                    ref / 1e3, ref_unc / 1e3),
                   abs(d - ref) < REF_BOUND_NS, '')
        return d

    def drift(self, name):
        g = self.boot(name, device='time-probe=on')
        d0 = self.drift_ref(g, '%s: at boot' % name)
        c0, unc = g.clock_offset()
        self.check('%s: drift_ns agrees with the console clock' %
                   name, abs(d0 - c0) < unc + 20 * 1000000,
                   'sysfs %d, console %d +- %d' % (d0, c0, unc))
        # +2.5 s is below vmd's 5 s SYNCRTC threshold: no step, only drift
        g.set('host-offset-ns', 2500 * 1000000)
        time.sleep(2.5)
        d1 = self.drift_ref(g, '%s: host +2.5 s' % name)
        err = (d1 - d0) + 2500 * 1000000
        self.check('%s: injected -2.5 s offset seen (error %d us)'
                   % (name, err // 1000), abs(err) < 2000000,
                   'd0 %d d1 %d' % (d0, d1))
        # Host clock 1000 ppm fast for 10 s: 10 ms more behind
        g.set('host-skew-ppb', 1000000)
        t0 = time.time()
        time.sleep(10.5)
        d2 = self.drift_ref(g, '%s: host 1000 ppm fast for 10 s' % name)
        elapsed = time.time() - t0
        want = -elapsed * 1e6   # ns lost at 1000 ppm over elapsed seconds
        self.check('%s: injected +1000 ppm skew seen (%.2f ms over %.1f s, '
                   'expected %.2f ms)' % (name, (d2 - d1) / 1e6, elapsed,
                                          want / 1e6),
                   abs((d2 - d1) - want) < 2.5e6, '')
        sets = g.clock_sets()
        self.check('%s: guest clock never set without SYNCRTC' % name,
                   sets == 0, '%d sets' % sets)
        self.finish(name, g)

    def guest_poweroff(self, name):
        """A guest poweroff tells the host, once the devices are shut
        down (ours reset), and vmd ends the VM 3 s later; a host that
        ignores the notice leaves a halted guest, not a panicked one."""
        g = self.boot(name)
        booted = self.last_write(g, 'status-log')
        g.sh_async('poweroff')
        end = g.wait_end(60)
        acks = self.acks(g)
        notice = [ns for v, ns in acks if v == 1]
        resets = [ns for v, ns in self.write_log(g, 'status-log')
                  if v == 0 and ns > booted]
        con = g.console()
        self.check('%s: guest told the host with SHUTDOWN' % name,
                   notice, str(acks))
        self.check('%s: VM ended 3 s after the notice (%.1f s)' %
                   (name, (end - notice[0]) / NS if end and notice else -1),
                   end and notice and end - notice[0] < 4 * NS and
                   g.end_reason() == 'timer-expired', g.end_reason())
        self.check('%s: notice sent after the devices were shut down (ours '
                   'reset first), the guest waiting for the host' % name,
                   'filesystems unmounted' in con and notice and resets and
                   resets[0] < notice[0] and g.get('status') == 0 and
                   HALT_MSG not in con,
                   'resets (host ns) %s, notice %s, status %s' %
                   (resets, notice, g.get('status')))
        self.finish(name, g)

        # vmd ignores the notice while COMMAND holds another value
        name += '-ignored'
        g = self.boot(name)
        g.set('raise', 42)
        g.sh_async('poweroff')
        halted = g.wait_console(HALT_MSG, 60)
        time.sleep(2)
        self.check('%s: notice ignored: the guest halts, the VM stays' %
                   name, halted and not g.get('end-reason') and
                   g.proc.poll() is None, g.console()[-1500:])
        self.finish(name, g)

    def no_ack(self, name):
        g = self.boot(name, device='features=5')
        self.check('%s: ACK not negotiated' % name,
                   g.get('guest-features') == 5, g.get('guest-features'))
        g.request('stop')
        end = g.wait_end(30)
        raised = g.get('raise-time-ns')
        # Unacked, vmd ends the VM when its 3 s timer expires; but the
        # driver carries out the reboot all the same, and a guest that
        # resets first ends the VM then (vmd: a reset while a stop is
        # pending is a stop).  Either way, nothing was acked.
        took = (end - raised) if end else -1
        reason = g.end_reason()
        rebooted = 'host requested a reboot' in g.console()
        self.check('%s: no ack, the driver started a reboot; the VM ended '
                   '%.1f s after the stop by %s' % (name, took / NS, reason),
                   end and not self.acks(g) and rebooted and (
                       (reason == 'timer-expired' and
                        3 * NS <= took < 3.5 * NS) or
                       (reason == 'reset-after-stop' and took < 3 * NS)),
                   '%s %s, "host requested a reboot" in the console: %s' %
                   (reason, self.acks(g), rebooted))
        self.finish(name, g)

    def no_driver(self, name):
        # The baseline users have today: no driver, the device unbound,
        # "vmctl stop" pulls the plug.
        disk = os.path.join(self.workdir, name + '.img')
        harness.make_disk(disk)
        g = self.boot(name, kernel='unpatched', disk=disk)
        pci = g.sh('grep -l 0x0b5d /sys/bus/pci/devices/*/vendor || true')
        virtio = g.sh('cat /sys/bus/virtio/devices/*/vendor 2>/dev/null '
                      '| grep -c 0x0b5d || true')
        self.check('%s: device present on PCI, no virtio device bound' % name,
                   pci and virtio.strip() == '0' and not g.get('driver-ok'),
                   pci + ' ' + virtio)
        g.sh('mount -t ext4 /dev/vda /mnt')
        payload = self.write_unsynced(name, g, disk)
        t = time.time_ns()
        g.request('stop')
        end = g.wait_end(30)
        self.check('%s: stop powers the VM off at once (%.2f s)' %
                   (name, (end - t) / NS if end else -1),
                   end and end - t < NS and
                   g.end_reason() == 'stop-without-driver', g.end_reason())
        g.close()
        # The negative control of the stop scenarios' durability check
        after = harness.disk_file(disk, 'data.txt')
        self.check('%s: the data written before the stop is lost' % name,
                   after != payload, repr(after))
        self.check('%s: no kernel splat in the console' % name,
                   not g.splats(), '\n'.join(g.splats()))

    def rebind(self, name):
        g = self.boot(name, kernel='m', memory=768)
        leak = self.kmemleak_start(g)
        dev = self.vdev(g)
        drv = '/sys/bus/virtio/drivers/virtio_vmmci'
        failures = []
        for i in range(20):
            g.sh('echo %s > %s/unbind; echo %s > %s/bind' % (dev, drv, dev, drv))
            g.request('syncrtc')
            if g.sh('[ -e %s/%s ] && echo bound' % (drv, dev)) != 'bound':
                failures.append('bind %d' % i)
        self.check('%s: unbind/bind x20 with SYNCRTC in between' % name,
                   not failures, ' '.join(failures))
        failures = []
        for i in range(20):
            g.sh('modprobe -r virtio_vmmci && modprobe virtio_vmmci')
            g.request('syncrtc')
            if g.sh('[ -e %s/%s ] && echo bound' % (drv, dev)) != 'bound':
                failures.append('reload %d' % i)
        self.check('%s: rmmod/insmod x20 with SYNCRTC in between' % name,
                   not failures, ' '.join(failures))
        self.check_jump_fixed(g, '%s: after the reloads' % name, 30 * NS)
        self.raise_while_unloaded(name, g, 'virtio_vmmci',
                                  'modprobe -r virtio_vmmci',
                                  'modprobe virtio_vmmci')
        self.check_kmemleak(name, g, leak)
        self.finish(name, g)

    def raise_while_unloaded(self, name, g, what, unload, load):
        """A SYNCRTC raised while the module what is unloaded (the device
        reset, DRIVER_OK clear: vmd would refuse it, a hostile host may
        not).  The driver reads COMMAND when it binds, so the request is
        acked at the next load.  The device keeps ISR, and INTx up, over
        the reset, and QEMU's IOAPIC never delivers that line (Linux left
        the pin masked and edge-triggered at free_irq()); the next raise
        must still interrupt, as vmd's does (a new assert each time)."""
        g.sh(unload)
        before = self.last_write(g, 'acks')
        g.set('raise', 3)
        g.sh(load)
        acked = 3 in self.wait_value(
            lambda: [v for v, ns in self.acks(g) if ns > before],
            lambda got: 3 in got, 15)
        self.check('%s: a SYNCRTC raised while %s was unloaded is acked at '
                   'the next load (read at probe)' % (name, what), acked,
                   'acks: %s' % self.acks(g))
        self.check_jump_fixed(g, '%s: after a SYNCRTC raised while %s was '
                              'unloaded, the device interrupts again' %
                              (name, what), 30 * NS)

    def reload_under_fire(self, name):
        """rmmod/insmod RELOADS times while the host raises commands (a
        storm of SYNCRTC, unknown and no-op values) and switches time
        faults on and off; then the device still works, nothing leaked,
        and a stop is clean.

        A raise between rmmod and insmod holds INTx, which QEMU's IOAPIC
        does not deliver (see raise_while_unloaded(), which rebind runs
        alone); the next raise interrupts again, as on vmd."""
        g, disk = self.boot_with_disk(name, kernel='m')
        leak = self.kmemleak_start(g)
        dev = self.vdev(g)
        n = RELOADS
        # In a subshell: the interactive shell must not see the job end
        g.sh('rm -f /tmp/reloads; ( (i=0; while [ $i -lt %d ]; do '
             'modprobe -r virtio_vmmci && modprobe virtio_vmmci || break; '
             'i=$((i+1)); done; echo $i > /tmp/reloads) >/dev/null 2>&1 &)'
             % n)
        g.set('storm-interval-us', 2000)
        g.set('storm', '3:42:0')
        faults = TIME_FAULTS + ('none',)
        done, k, t0 = '', 0, time.time()
        while time.time() - t0 < 900:
            g.set('fault', faults[k % len(faults)])
            k += 1
            done = g.sh('cat /tmp/reloads 2>/dev/null || true')
            if done:
                break
            time.sleep(0.3)
        raised = g.get('storm-count')
        g.set('storm', '')
        g.set('fault', 'none')
        bound = g.sh('[ -e /sys/bus/virtio/drivers/virtio_vmmci/%s ] && '
                     'echo bound || true' % dev)
        self.check('%s: rmmod/insmod x%d while %d commands and %d fault '
                   'switches arrived (%.0f s)' %
                   (name, n, raised, k, time.time() - t0),
                   done == str(n) and bound == 'bound' and g.get('driver-ok'),
                   'reloads done: %r, %s' % (done, bound))
        self.check_jump_fixed(g, '%s: after the reloads' % name, 30 * NS)
        self.check_kmemleak(name, g, leak)
        self.stop_with_data(name, g, disk)

    def suspend_resume(self, name):
        # Suspend and resume the devices (pm_test, no real sleep): the
        # driver's freeze and restore; vmd only talks to a DRIVER_OK device.
        g = self.boot(name)
        self.suspend_devices(name, g)
        self.check('%s: DRIVER_OK set again after resume' % name,
                   g.get('driver-ok'), '')
        self.check_jump_fixed(g, '%s: after resume' % name, 20 * NS)
        g.request('stop')
        end = g.wait_end(60)
        self.check('%s: stop after resume ends the VM cleanly' % name,
                   end and g.end_reason() == 'reset-after-stop',
                   g.end_reason())
        self.finish(name, g)

    def suspend_devices(self, name, g):
        """Suspend and resume the devices (pm_test) and check that the
        device was reset at freeze and held reset until restore."""
        before = self.last_write(g, 'status-log')
        g.sh('echo devices > /sys/power/pm_test; '
             'echo freeze > /sys/power/state', timeout=120)
        # The core resets the device at restore whatever the driver does;
        # only a freeze that quiesces it resets it earlier, and pm_test
        # holds the devices suspended for 5 s in between.  A freeze that
        # does nothing leaves the device live while the guest sleeps.
        writes = [w for w in self.write_log(g, 'status-log') if w[1] > before]
        held = [(b[1] - a[1]) / NS for a, b in zip(writes, writes[1:])
                if a[0] == 0]
        self.check('%s: the device was reset at freeze and stayed reset '
                   'until restore (%s s)' % (
                       name, ', '.join('%.1f' % h for h in held)),
                   any(h >= 2 for h in held),
                   'DEVICE_STATUS writes since the suspend: %s' % writes)

    # A hostile or faulty host: the model's fault modes

    def wait_acked(self, g, timeout=10):
        """Wait until the guest has taken the raised command out of the
        COMMAND slot (it acks SYNCRTC, which vmd clears)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if g.get('command') == 0:
                return True
            time.sleep(0.05)
        return False

    def faults_time(self, name):
        """Garbage in the time registers is refused: the clock is never
        stepped from it; a genuine large or backward offset still is."""
        g, disk = self.boot_with_disk(name)
        # The guest's boot clock is off by up to a second or two (from
        # the RTC): "untouched" means that offset stays.
        before, _ = g.clock_offset()
        for fault in TIME_FAULTS:
            label = '%s: %s' % (name, fault)
            count = g.clock_sets()
            mark = len(g.console())
            g.set('fault', fault)
            g.set('raise', 3)
            acked = self.wait_acked(g)
            time.sleep(0.5)
            drift = g.sysfs('drift_ns', check=False)
            off, unc = g.clock_offset()
            log = '\n'.join(l for l in g.console()[mark:].splitlines()
                            if 'vmmci' in l or 'virtio' in l)
            self.check('%s: SYNCRTC acked, refused, clock untouched '
                       '(guest - host %.1f ms, was %.1f ms)' %
                       (label, off / 1e6, before / 1e6),
                       acked and g.clock_sets() == count and
                       abs(off - before) < SYNC_BOUND_NS,
                       'acked %s, clock sets %d -> %d' %
                       (acked, count, g.clock_sets()))
            # drift_ns takes one reading, which steps nothing: a host
            # clock going backwards from reading to reading is a wrong
            # offset there; only the step, which reads twice, refuses it
            nodata = fault != 'time-backwards'
            self.check('%s: logged, drift_ns reads %s' %
                       (label, 'ENODATA' if nodata else 'an offset'),
                       re.search(r'ignoring (invalid|inconsistent) host time',
                                 log) and
                       ('No data available' in drift if nodata else
                        re.match(r'^-?\d+$', drift)),
                       'drift_ns: %s\nlog:\n%s' % (drift, log[-2000:]))
            g.set('fault', 'none')
        drift = self.wait_sysfs(g, 'drift_ns',
                                lambda v: re.match(r'^-?\d+$', v or ''))
        self.check('%s: drift measured again once the fault is gone' % name,
                   re.match(r'^-?\d+$', drift or ''), drift)
        # vmd's SYNCRTC after the host resumed from a week of suspend
        self.check_jump_fixed(g, '%s: host a week ahead' % name,
                              7 * 86400 * NS)
        # Host clock set back 30 s: vmd sends no SYNCRTC, drift shows it;
        # an explicit one steps the guest back
        g.set('host-offset-ns', g.offset_ns - 30 * NS)
        drift = self.wait_sysfs(g, 'drift_ns',
                                lambda v: int(v) > 29 * NS, timeout=10)
        stepped, step = self.step_after(g, lambda: g.request('syncrtc'))
        off, unc = g.clock_offset()
        self.check('%s: host clock set back 30 s: drift shows it (%.3f s), '
                   'SYNCRTC steps back (logged %s ns), guest - host %.1f ms' %
                   (name, int(drift) / NS, step, off / 1e6),
                   int(drift) > 29 * NS and stepped and step is not None and
                   abs(step + 30 * NS) < SYNC_BOUND_NS and
                   abs(off) + unc < SYNC_BOUND_NS, 'clock set: %s' % stepped)
        self.stop_with_data(name, g, disk)

    def faults_commands(self, name):
        """Unknown values, spurious interrupts, storms, DRIVER_OK cleared,
        features withdrawn, SYNCRTC during the stop."""
        g, disk = self.boot_with_disk(name)
        dev = self.vdev(g)
        drv = '/sys/bus/virtio/drivers/virtio_vmmci'

        acked = g.get('last-ack-ns')
        mark = len(g.console())
        for value in (4, 42, 0xffffffff):
            g.set('raise', value)
            time.sleep(0.5)
        log = g.console()[mark:]
        self.check('%s: unknown commands logged, not acked' % name,
                   all('ignoring unknown host command %d' % v in log
                       for v in (4, 42, 0xffffffff)) and
                   g.get('last-ack-ns') == acked,
                   log[-1500:])

        g.set('raise', 0)
        time.sleep(0.5)
        mark = len(g.console())
        for _ in range(50):
            g.set('raise', 0)
        time.sleep(1)
        log = [l for l in g.console()[mark:].splitlines() if 'virtio' in l]
        self.check('%s: 50 interrupts without a change: nothing done' % name,
                   not log and g.get('last-ack-ns') == acked and
                   g.clock_sets() == 0, '\n'.join(log))

        for storm in ('3', '3:42:0:3:7'):
            label = '%s: storm %s at 1000/s for 5 s' % (name, storm)
            count = g.clock_sets()
            mark = len(g.console())
            # 10 ms off, too little for vmd to raise SYNCRTC: the storm's
            # first one steps, the rest find the clock in step or nearly
            g.set('host-offset-ns', g.offset_ns + 10 * 1000000)
            g.set('storm', storm)
            t0, replies = time.time(), 0
            while time.time() - t0 < 5:
                g.sh('true')
                replies += 1
            raised = g.get('storm-count')
            g.set('storm', '')
            steps = g.clock_sets() - count
            lines = [l for l in g.console()[mark:].splitlines()
                     if 'virtio' in l]
            off, unc = g.clock_offset()
            self.check('%s: guest responsive (%d shell replies), %d raises, '
                       'guest clock set %d+ times, %d log lines; guest - host %.1f ms' %
                       (label, replies, raised, steps, len(lines), off / 1e6),
                       replies >= 5 and raised > 1000 and steps > 0 and
                       abs(off) + unc < SYNC_BOUND_NS and len(lines) < 100,
                       '\n'.join(lines[-30:]))

        mark = len(g.console())
        # vmd never clears DRIVER_OK; a host that does gets what a guest
        # without a driver gets, and the driver does not set it again
        # behind the virtio core's back (an interrupt would be its chance).
        g.set('status', 0)
        g.set('raise', g.get('command'))
        time.sleep(2)
        try:
            g.request('syncrtc')
            refused = False
        except harness.QmpError:
            refused = True
        self.check('%s: DRIVER_OK cleared by the host stays clear, the host '
                   'refuses requests' % name,
                   not g.get('driver-ok') and refused,
                   g.console()[mark:][-1000:])
        g.sh('echo %s > %s/unbind; echo %s > %s/bind' % (dev, drv, dev, drv))
        self.check('%s: rebinding the driver sets DRIVER_OK' % name,
                   g.get('driver-ok'), '')

        mark, count = len(g.console()), g.clock_sets()
        g.set('features', 0)
        g.sh('echo %s > %s/unbind; echo %s > %s/bind' % (dev, drv, dev, drv))
        feats = g.sh('cat /sys/bus/virtio/devices/%s/features' % dev)
        g.set('raise', 3)
        acked = self.wait_acked(g, timeout=3)
        time.sleep(0.5)
        log = g.console()[mark:]
        self.check('%s: features withdrawn: bound without them, SYNCRTC '
                   'neither acked nor followed' % name,
                   not feats.strip('0') and g.get('guest-features') == 0 and
                   not acked and g.get('driver-ok') and
                   'without offering its time' in log and
                   g.clock_sets() == count,
                   'features %s\n%s' % (feats, log[-1000:]))
        g.set('raise', 0)
        g.set('features', 7)
        g.sh('echo %s > %s/unbind; echo %s > %s/bind' % (dev, drv, dev, drv))
        self.check('%s: features offered again, negotiated on rebind' % name,
                   g.get('guest-features') == 7 and g.get('driver-ok'),
                   str(g.get('guest-features')))

        acked = []

        def syncrtc_while_stopping(g):
            g.set('raise', 3)
            raised = g.get('raise-time-ns')
            acked.extend(self.wait_value(
                lambda: [v for v, ns in self.acks(g) if ns >= raised],
                lambda got: 3 in got, 3))
        self.stop_with_data(name, g, disk, during=syncrtc_while_stopping)
        self.check('%s: SYNCRTC during the stop acked, not followed' % name,
                   3 in acked and
                   'ignoring a clock sync while stopping' in g.console(),
                   'COMMAND writes after the raise: %s' % acked)

    def faults_stop_race(self, name):
        """SHUTDOWN, then REBOOT before the guest acked it: one orderly
        stop, and the data is on disk."""
        g, disk = self.boot_with_disk(name, device='long-timeout-ms=15000')
        payload = self.write_unsynced(name, g, disk)
        g.request('shutdown')
        g.request('reboot')
        end = g.wait_end(60)
        con = g.console()
        started = con.count('host requested a reboot') + \
            con.count('host requested a shutdown')
        self.check('%s: one stop, orderly (%s)' % (name, g.end_reason()),
                   end and started == 1 and 'filesystems unmounted' in con and
                   g.end_reason() in ('reset-after-stop', 'timer-expired'),
                   '\n'.join(l for l in con.splitlines() if 'vmmci' in l))
        self.finish(name, g)
        self.check_disk(name, disk, payload)

    def stop_during_shutdown(self, name):
        """The host stops the guest while it powers off on its own, held in
        device_shutdown() (user-mode helpers already off) by a test device
        whose shutdown takes 6 s.  The stop is not acted on: no forced
        reboot beside the power-off, which ends as it would have.  With
        .shutdown (7.3) the driver is still live there and acks the stop;
        the backports' reboot notifier has quiesced it, nothing is read,
        and vmd's 3 s timer ends the VM.  The data is on disk, no splat."""
        kernel = 'y-slow-shutdown'
        self.kernels[kernel] = harness.with_module(
            self.kernels['y'], os.path.join(harness.TOP, 'ci', 'guest',
                                            'slow_shutdown.c'),
            os.path.join(self.base, kernel))
        g, disk = self.boot_with_disk(name, kernel=kernel,
                                      device='long-timeout-ms=15000')
        g.sh('insmod /lib/modules/extra/slow_shutdown.ko hold_ms=6000')
        payload = self.write_unsynced(name, g, disk)
        g.sh_async('poweroff')
        held = g.wait_console('holding the shutdown', 60)
        g.request('stop')
        raised = g.get('raise-time-ns')
        end = g.wait_end(90)
        acks = [v for v, ns in self.acks(g) if ns >= raised]
        con = g.console()
        lines = '\n'.join(l for l in con.splitlines()
                          if re.search(r'vmmci|virtio|reboot|slow_shutdown',
                                       l))
        hook = self.base == harness.CONF['UPSTREAM_BASE']
        self.check('%s: the stop raised while the guest was in '
                   'device_shutdown() is %s' % (
                       name, 'acked, not acted on' if hook else
                       'not read (the driver is quiesced)'),
                   held and (acks[:1] == [2] and 'the system is already '
                             'going down' in con if hook else not acks),
                   'acks after the raise: %s\n%s' % (acks, lines))
        self.check('%s: no reboot forced beside the power-off, which ended '
                   'the VM (%s)' % (name, g.end_reason()),
                   held and end and g.end_reason() == 'timer-expired' and
                   'host requested a reboot' not in con and
                   'forcing the issue' not in con, lines)
        self.finish(name, g)
        self.check_disk(name, disk, payload)

    def soak(self, name):
        """Mixed commands and faults for SOAK_MINUTES (seeded, random),
        with the guest writing to disk meanwhile; then the clock is
        stepped right, kmemleak finds nothing and a stop is clean."""
        seed = int(os.environ.get('VMMCI_SOAK_SEED', time.time()))
        rng = random.Random(seed)
        g, disk = self.boot_with_disk(name)
        leak = self.kmemleak_start(g)
        g.sh('(while [ ! -e /tmp/soak.stop ]; do date >> /mnt/soak.log; '
             'cat /sys/bus/virtio/drivers/virtio_vmmci/*/drift_ns; '
             'sleep 0.2; done >/dev/null 2>&1 &)')
        actions = {
            'syncrtc': lambda: g.request('syncrtc'),
            'jump': lambda: g.set('host-offset-ns', g.offset_ns + rng.choice(
                (-1, 1)) * rng.randint(6, 86400) * NS),
            'unknown': lambda: g.set('raise', rng.randint(4, 0xffffffff)),
            'spurious': lambda: g.set('raise', g.get('command')),
            'fault': lambda: (g.set('fault', rng.choice(TIME_FAULTS)),
                              g.set('raise', 3)),
            'fault-off': lambda: g.set('fault', 'none'),
            'storm': lambda: g.set('storm', rng.choice(
                ('3', '0', '3:42:0', '7:3'))),
            'storm-off': lambda: g.set('storm', ''),
            'read': lambda: g.sh('cat /sys/bus/virtio/drivers/virtio_vmmci/'
                                 '*/* >/dev/null 2>&1 || true'),
        }
        done = dict.fromkeys(actions, 0)
        t0 = time.time()
        while time.time() - t0 < SOAK_MINUTES * 60:
            what = rng.choice(sorted(actions))
            actions[what]()
            done[what] += 1
            time.sleep(rng.uniform(0.05, 1.0))
        g.set('storm', '')
        g.set('fault', 'none')
        # The console measurement below wants a quiet guest: its bound is
        # half the round trip
        g.sh('touch /tmp/soak.stop; sleep 0.5')
        # 50 ms off, beyond what a step within the sample's bound leaves
        g.set('host-offset-ns', g.offset_ns + 50 * 1000000)
        summary = ', '.join('%s %d' % kv for kv in sorted(done.items()))
        alive = g.sh('echo alive') == 'alive'
        self.check('%s: guest alive and device ready after %g min of mixed '
                   'commands and faults (seed %d): %s' %
                   (name, SOAK_MINUTES, seed, summary),
                   alive and g.get('driver-ok'), '')
        stepped, _ = self.step_after(g, lambda: g.request('syncrtc'))
        off, unc = g.clock_offset()
        self.check('%s: then a SYNCRTC puts the clock within %d ms of host '
                   'time (%.1f +- %.1f ms)' % (name, SYNC_BOUND_NS // 1000000,
                                               off / 1e6, unc / 1e6),
                   stepped and abs(off) + unc < SYNC_BOUND_NS,
                   'clock set: %s' % stepped)
        self.check_kmemleak(name, g, leak)
        self.stop_with_data(name, g, disk)

    # The PTP clock

    def ptp_device(self, g):
        """The guest's vmmci PTP clock, e.g. ptp0, found from the virtio
        device."""
        return g.sh('ls /sys/bus/virtio/devices/%s/ptp' % self.vdev(g),
                    check=False).strip()

    def start_chrony(self, g, ptp):
        """Start chronyd in the guest with the PTP clock as its source."""
        self.run_chronyd(g, CHRONY_CONF.replace('PTP', ptp))

    def run_chronyd(self, g, conf):
        """Start chronyd in the guest with conf as /etc/chrony.conf (a
        printf format: lines end in a backslash-n)."""
        # chronyd refuses a command socket directory others can read
        g.sh('mkdir -p -m 0750 /run/chrony; mkdir -p /var/lib/chrony')
        g.sh('printf "%s" > /etc/chrony.conf' % conf)
        g.sh('chronyd -f /etc/chrony.conf -u root -F 0 -L 0 '
             '-l /tmp/chronyd.log')

    def ptp_clock(self, name):
        """The PTP clock is found from the device, reads host time, and
        cannot be set or adjusted."""
        g = self.boot(name)
        ptp = self.ptp_device(g)
        self.check('%s: PTP clock under the virtio device' % name,
                   re.match(r'^ptp\d+$', ptp), ptp)
        if not ptp:
            self.finish(name, g)
            return
        clock_name = g.sh('cat /sys/class/ptp/%s/clock_name' % ptp)
        self.check('%s: %s is named "vmmci host clock"' % (name, ptp),
                   clock_name == 'vmmci host clock', clock_name)
        # Guest clock 2 s behind the host (below vmd's SYNCRTC threshold)
        g.set('host-offset-ns', 2 * NS)
        _, phc_off, phc_bound = (int(x) for x in g.sh(
            'vmmci-guest phc-read /dev/%s 50' % ptp).split())
        probe_off, bound = g.probe()
        # phc-read gives PHC - guest, the probe guest - host
        err = phc_off + probe_off
        self.check('%s: PTP clock reads host time (PHC - system %.3f ms '
                   '+- %.3f, host - guest %.3f ms +- %.3f)' % (
                       name, phc_off / 1e6, phc_bound / 1e6,
                       -probe_off / 1e6, bound / 1e6),
                   abs(err) <= phc_bound + bound + 1000, 'error %d ns' % err)
        out = g.sh('phc_ctl /dev/%s get cmp 2>&1' % ptp, check=False)
        m = re.search(r'offset from CLOCK_REALTIME is (-?\d+)ns', out)
        # phc_ctl cmp prints system - PHC, the probe's sign
        self.check('%s: phc_ctl get and cmp work' % name,
                   'clock time is' in out and m and
                   abs(int(m.group(1)) - probe_off) < 1000000, out)
        # EOPNOTSUPP from the driver; the PTP core refuses a frequency
        # beyond max_adjustment (0) with ERANGE before asking it
        for op, err in (('set 0', 'not supported'), ('adj 1', 'not supported'),
                        ('freq 0', 'not supported'),
                        ('freq 100', 'out of range')):
            out = g.sh('phc_ctl /dev/%s %s 2>&1; echo "exit $?"' % (ptp, op),
                       check=False)
            self.check('%s: phc_ctl %s refused (%s)' % (name, op, err),
                       err in out, out)
        after, _ = g.probe()
        self.check('%s: the guest clock was not changed by those' % name,
                   abs(after - probe_off) < 1000000,
                   'guest - host %d ns before, %d ns after' %
                   (probe_off, after))
        # Unbinding removes the clock; rebinding brings one back
        dev = self.vdev(g)
        drv = '/sys/bus/virtio/drivers/virtio_vmmci'
        g.sh('echo %s > %s/unbind' % (dev, drv))
        gone = g.sh('ls /sys/class/ptp', check=False)
        g.sh('echo %s > %s/bind' % (dev, drv))
        back = self.ptp_device(g)
        self.check('%s: unbind removes the clock, bind adds it again' % name,
                   gone == '' and re.match(r'^ptp\d+$', back),
                   'after unbind: %r, after bind: %r' % (gone, back))
        self.finish(name, g)

    def ptp_chrony(self, name):
        """chrony with "refclock PHC" keeps the guest within 1 ms of a host
        clock that starts 50 ms off and runs 100 ppm fast, measured by the
        model's time probe (not the PTP clock's own registers)."""
        g = self.boot(name, device='time-probe=on')
        ptp = self.ptp_device(g)
        if not self.check('%s: PTP clock present' % name, ptp, ptp):
            self.finish(name, g)
            return
        g.set('host-offset-ns', 50 * 1000000)
        g.set('host-skew-ppb', 100 * 1000)
        self.start_chrony(g, ptp)
        converged, samples = None, []
        t0 = time.time()
        while time.time() - t0 < CHRONY_CONVERGE_S:
            off, bound = g.ref_offset()
            samples.append((time.time() - t0, off, bound))
            recent = samples[-5:]
            if len(recent) == 5 and all(abs(o) + b < 1000000
                                        for _, o, b in recent):
                converged = time.time() - t0
                break
            time.sleep(2)
        sources = g.sh('chronyc -n sources 2>&1', check=False)
        self.check('%s: chrony selected the PHC refclock' % name,
                   re.search(r'^#\* PHC0', sources, re.M), sources)
        self.check('%s: within 1 ms of host time after %s s' % (
            name, '%.0f' % converged if converged else '> %d' %
            CHRONY_CONVERGE_S), converged, 'samples (s, ns, bound): %s' %
            samples[-10:])
        if converged:
            worst = 0
            t1 = time.time()
            while time.time() - t1 < CHRONY_HOLD_S:
                off, bound = g.ref_offset()
                worst = max(worst, abs(off) + bound)
                time.sleep(3)
            self.check('%s: held within 1 ms for %d s (worst |guest - host| '
                       '+ bound %.3f ms)' % (name, CHRONY_HOLD_S, worst / 1e6),
                       worst < 1000000, '')
            self.sync_in_step(name, g)
        self.finish(name, g)

    def sync_in_step(self, name, g):
        """With chrony holding the guest within microseconds of host
        time, a SYNCRTC finds it within the sample's bound: acked, logged,
        and the clock not set.  Up to SYNC_IN_STEP_TRIES requests,
        CHRONY_SETTLE_S apart: chrony may leave the clock outside the bound
        for one, which then steps, and needs seconds to recover from it."""
        found = re.compile(r'clock within (-?\d+) ns of host time '
                           r'\(bound (\d+) ns\), not stepped')
        tries = []
        for _ in range(SYNC_IN_STEP_TRIES):
            count, mark = g.clock_sets(), len(g.console())
            g.request('syncrtc')
            acked = self.wait_acked(g, 3)
            time.sleep(1)
            within = found.findall(g.console()[mark:])
            tries.append({'acked': acked, 'within': within,
                          'stepped': g.steps_logged(mark),
                          'sets': g.clock_sets() - count})
            if within:
                break
            time.sleep(CHRONY_SETTLE_S)
        last = tries[-1]
        ok = (all(t['acked'] for t in tries) and last['within'] and
              not last['sets'] and not last['stepped'] and
              all(abs(int(o)) <= int(b) for o, b in last['within']))
        self.check('%s: a SYNCRTC with chrony in step is acked, logged as '
                   'within the bound, and does not set the clock (%s after '
                   '%d requests)' %
                   (name, ', '.join('%s of %s ns' % w for w in
                                    last['within']) or 'none within',
                    len(tries)), ok, str(tries))


# chrony in the guest: the vmmci PTP clock as its only source.  makestep
# as the admin guide suggests; the log goes to /tmp/chronyd.log.
CHRONY_CONF = (r'refclock PHC /dev/PTP poll 0 dpoll -2\n'
               r'makestep 1 3\n'
               r'driftfile /var/lib/chrony/drift\n')
CHRONY_CONVERGE_S = 240
CHRONY_HOLD_S = 60
CHRONY_SETTLE_S = 10
SYNC_IN_STEP_TRIES = 5
