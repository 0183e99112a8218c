# SPDX-License-Identifier: GPL-2.0
"""Show what the series does, from scratch: fetch Debian's linux-source-6.12,
apply the series, build it (the e2e debug kernel, driver built in), build
QEMU with the model of vmd's device, boot the kernel against it, and walk
through what a vmd user sees: the driver bound, the clock drift in sysfs,
a host clock jump fixed by SYNCRTC, and "vmctl stop" shutting the guest
down cleanly with its data on disk.

The first run fetches and builds everything into the cache; later runs
reuse it and only boot the guest.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness              # noqa: E402
import scenarios            # noqa: E402
from harness import NS      # noqa: E402


def tell(text):
    print('\n== ' + text, flush=True)


def show(text):
    print('   ' + text, flush=True)


def ms(ns):
    if abs(ns) < 1000000:
        return '%.1f us' % (ns / 1e3)
    return '%.1f ms' % (ns / 1e6)


def main():
    ap = argparse.ArgumentParser(
        prog='demo', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--base', default='6.12')
    args = ap.parse_args()

    start = time.time()
    results = harness.Results()
    workdir = os.path.join(harness.CACHE, 'demo')
    suite = scenarios.Suite(results, args.base, workdir)
    tell('Building: Debian linux-source-%s + the series, Debian\'s QEMU + the '
         'vmmci model' % args.base)
    suite.prepare(('y',))

    disk = os.path.join(workdir, 'disk.img')
    os.makedirs(workdir, exist_ok=True)
    harness.make_disk(disk)
    tell('Booting the patched kernel against the emulated vmd device')
    g = suite.boot('guest', disk=disk)
    try:
        show('guest shell up after %.1f s (TCG, debug kernel)' % g.boot_s)
        dev = suite.vdev(g)
        line = [l for l in g.console().splitlines() if 'virtio_vmmci' in l]
        show('PCI 0b5d:0777 is %s, bound to virtio_vmmci:' % dev)
        show('  ' + (line[0].strip() if line else '(no probe message)'))

        tell('Clock drift, as the driver reports it in sysfs')
        drift = int(g.sysfs('drift_ns'))
        show('drift_ns = %d: the guest clock is %s %s the host clock'
             % (drift, ms(abs(drift)),
                'ahead of' if drift > 0 else 'behind'))

        tell('The host clock jumps forward by one hour (as after a host '
             'suspend)')
        count = g.clock_sets()
        g.set('host-offset-ns', 3600 * NS)
        off, _ = g.probe(5)
        show('right after the jump, guest - host = %.3f s' % (off / 1e9))
        synced = g.wait_clock_set(count, 20) is not None
        off, bound = g.probe()
        synced = synced and abs(off) + bound < scenarios.SYNC_BOUND_NS
        step = [l for l in g.console().splitlines() if 'clock stepped' in l]
        show('vmd sent SYNCRTC; the driver logged:')
        show('  ' + (step[-1].strip() if step else '(nothing)'))
        show('now guest - host = %s (+- %s), read from the device '
             'registers by a user-space probe' % (ms(off), ms(bound)))

        tell('vmctl stop, right after writing a file without sync')
        g.sh('mount /dev/vda /mnt && echo "hello from the guest" > '
             '/mnt/hello.txt')
        g.request('stop')
        end = g.wait_end(150)
        raised = g.get('raise-time-ns')
        ack = [ns for v, ns in suite.acks(g) if v == 2]
        if ack:
            show('the guest acknowledged the stop after %s (vmd allows 3 s)'
                 % ms(ack[0] - raised))
        reason = g.end_reason()
        if end:
            show('and the VM ended %.1f s after the request: %s' % (
                (end - raised) / NS,
                'the guest rebooted cleanly and vmd powered it off'
                if reason == 'reset-after-stop' else reason))
    finally:
        g.close()
    data = harness.disk_file(disk, 'hello.txt') == 'hello from the guest\n'
    clean, _ = harness.disk_clean(disk)
    show('on the disk afterwards: hello.txt %s, filesystem %s' % (
        'is there' if data else 'is MISSING',
        'clean' if clean else 'NOT clean'))
    show('(without the driver, vmd powers the VM off at once and the file '
         'is lost: scripts/e2e --scenario no-driver)')
    bad = g.splats()
    tell('Done in %.0f s; kernel console: %s (%s)' % (
        time.time() - start, g.path('console.log'),
        'no warnings' if not bad else '%d warning lines' % len(bad)))
    # What it showed is what happened: the clock stepped to host time, the
    # stop acked, the guest rebooted, the file on a clean disk
    return 0 if synced and ack and end and reason == 'reset-after-stop' and \
        data and clean and not bad else 1


if __name__ == '__main__':
    sys.exit(main())
