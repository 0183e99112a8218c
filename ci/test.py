# SPDX-License-Identifier: GPL-2.0
"""scripts/test: run the project's tests and print "N passed, N failed" last.

End to end (scripts/e2e), on the default tree: the patched kernel boots
under QEMU against a model of vmd's device; see ci/e2e/scenarios.py.

Static checks of the series, on the upstream base (7.3, what is sent),
on the default tree (Debian's 6.12) and on each backport (BACKPORT_BASES
in vmmci.conf, Debian 12's 6.1):
  - patches/ is what scripts/regen makes of the sources
  - the series applies with git am, with b4 am, and with quilt
  - checkpatch.pl --strict finds nothing in any patch
  - the full series builds with the driver =m and =y; W=1 and sparse
    (C=2) warn about nothing in the files the series touches
  - the driver's KUnit test module builds W=1 and sparse clean on x86
  - coccicheck and kernel-doc -Wall find nothing in the files the series
    touches
On the upstream base only (one build of each kind, for time):
  - every prefix of the series builds (bisectable), with W=1
  - the full series builds with the driver =n, and with virtio_pci as a
    module and no PTP support (where =y must not be selectable)
  - the KUnit suite passes under tools/testing/kunit/kunit.py on
    x86_64 (a QEMU guest)
  - drivers/virtio builds W=1 clean with clang (the driver =m and =y)
    and for i386, where the objects call no libgcc 64-bit division
On the default tree: scripts/deb --small makes a linux-image package
with the driver; and in Debian 13's own packaging (scripts/debian-pkg):
the committed patches/debian/ change is what the script makes of the
linux source package of the version it names (that version is fetched,
not the newest: a newer package on the mirror changes no result), it
applies, dpkg-source applies Debian's patches and ours with no fuzz,
the amd64 config the package's rules make has the driver =m and
olddefconfig keeps it, and drivers/virtio/ builds W=1 clean with that
config; when the mirror serves a newer linux package of 6.12, the
committed change applies to it with patch --fuzz=0.  A backport's
builds are of drivers/virtio only.
The bases the e2e suite boots (6.12 and 7.3) build in its build
directory, with its debug config: each tree is built once.

The DKMS route (scripts/dkms), for the Debian kernel linux-image-amd64
names in this machine's apt sources: vmmci_pci.ko and virtio_vmmci.ko
build and install with dkms from its headers, and build W=1 clean; a
kernel that has the driver, one without virtio or PCI and one of a base
the package has no driver for are refused; dkms in a chroot of the next
Debian release builds them for its kernel and its backports kernel
(virtio_pci built in); checkpatch --strict finds nothing in the
package's transport, dkms/vmmci_pci.c; scripts/deb-dkms makes the
vmmci-dkms Debian package, lintian clean; then scripts/e2e --debian
boots Debian's own kernel with those modules.

Last, the README's first command, scripts/demo, in a fresh minimal
chroot of each Debian release the scripts support (12 and 13), with the
apt sources of a fresh install: this machine's own release as root,
sharing the build cache; the other as a user with sudo, with a cache of
its own.  Each fails on any package the demo needs and does not install.
The README's commands on an unsupported host (another distribution, or
neither root nor sudo) stop at once with one line.

Two things at a time, on two cores: QEMU builds in the background, at
low priority, while the default tree builds; the backports, the DKMS
route, the default tree's e2e kernels and then its e2e suite beside the
upstream base's builds, which leave a core idle while they link and run
at a lower priority than the guests; the upstream base's suite as soon
as its kernels are built, beside its last builds; last, one guest per
core: Debian's kernels, the demo.

Builds are incremental in the cache (scripts/build); the first run on a
new machine fetches the trees and builds each from scratch.
"""

import argparse
import difflib
import glob
import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, 'ci', 'e2e'))

import harness                  # noqa: E402
from harness import Results     # noqa: E402
sys.path.insert(0, os.path.join(TOP, 'ci'))
import debian_pkg               # noqa: E402

# scripts/e2e is a script without .py: load it as a module
_loader = importlib.machinery.SourceFileLoader(
    'e2e', os.path.join(TOP, 'scripts', 'e2e'))
e2e = importlib.util.module_from_spec(
    importlib.util.spec_from_loader('e2e', _loader))
_loader.exec_module(e2e)


CONF = harness.CONF
series_dir = harness.series_dir
series = harness.series
# The first patch that adds CONFIG_VIRTIO_VMMCI
DRIVER_PATCH = 5


def run(cmd, **kw):
    """Run cmd; return (exit status, stdout+stderr)."""
    res = subprocess.run(cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, **kw)
    return res.returncode, res.stdout


def script(name, *args):
    return run([os.path.join(TOP, 'scripts', name)] + list(args))


BACKPORT_BASES = CONF.get('BACKPORT_BASES', '').split()
DEBIAN_RELEASES = CONF['DEBIAN_RELEASES'].split()


def tree_path(base):
    """The git tree of base, as scripts/get-tree keeps it."""
    return script('get-tree', base)[1].strip().splitlines()[-1]


def patch_files(patch):
    """Files one patch changes, from its diff."""
    files = set()
    with open(patch) as f:
        for line in f:
            m = re.match(r'^\+\+\+ b/(\S+)', line)
            if m:
                files.add(m.group(1))
    return files


def touched_files(base):
    """Files the series changes, from its diffs."""
    return set().union(*(patch_files(p) for p in series(base)))


def builds_read(files):
    """Whether kbuild reads any of files: all but the documentation
    (whose Kconfig the top-level Kconfig sources) and MAINTAINERS."""
    def doc(f):
        return f == 'MAINTAINERS' or (
            f.startswith('Documentation/') and
            not os.path.basename(f).startswith(('Kconfig', 'Makefile')))
    return not all(doc(f) for f in files)


def warnings_in(log_text, files):
    """Compiler and sparse warnings that point into files."""
    found = []
    for line in log_text.splitlines():
        m = re.match(r'^(\S+?):\d+(:\d+)?: (warning|error)', line)
        if not m:
            continue
        path = m.group(1)
        if any(path == f or path.endswith('/' + f) for f in files):
            found.append(line)
    return found


def build(results, name, base, *args, check_files=None):
    """Build with scripts/build; record a result; return the build dir."""
    status, out = script('build', '--base', base, *args)
    outdir = out.strip().splitlines()[-1] if status == 0 else None
    if status:
        results.record(name, False, out)
        return None
    bad = []
    if check_files:
        with open(os.path.join(outdir, 'build.log')) as f:
            bad = warnings_in(f.read(), check_files)
    results.record(name, not bad, '\n'.join(bad))
    return outdir


def test_regen(results):
    status, out = script('regen', '--check')
    results.record('patches/ in sync with the sources (scripts/regen --check)',
                   status == 0, out)


def test_help(results):
    bad = []
    for path in sorted(glob.glob(os.path.join(TOP, 'scripts', '*'))):
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            continue
        status, out = run([path, '--help'])
        if status or 'Usage' not in out and 'usage' not in out:
            bad.append('%s --help: exit %d' % (os.path.basename(path), status))
    results.record('every script answers --help', not bad, '\n'.join(bad))


def test_unsupported_host(results):
    """The README's commands on a host they do not support stop with one
    line naming what is supported, before anything is fetched: on a
    machine that says it is Ubuntu (an os-release of its own, in a mount
    namespace), and as a user with neither root nor sudo."""
    with tempfile.TemporaryDirectory() as tmp:
        fake = os.path.join(tmp, 'os-release')
        with open(fake, 'w') as f:
            f.write('PRETTY_NAME="Ubuntu 24.04 LTS"\nID=ubuntu\n'
                    'VERSION_CODENAME=noble\n')
        cache = os.path.join(tmp, 'cache')
        env = dict(os.environ, VMMCI_CACHE=cache)
        # In a chroot of scripts/chroot, whose mount namespace is private
        # already, "/" is no mount point and cannot be made private
        prop = 'unchanged' if os.environ.get('VMMCI_IN_CHROOT') else 'private'
        cases = [('an Ubuntu host', 'Ubuntu 24.04 LTS',
                  ['unshare', '--mount', '--propagation', prop, 'sh',
                   '-c', 'mount --bind "$0" /etc/os-release && exec "$@"',
                   fake]),
                 ('a user without sudo', 'neither root nor sudo',
                  ['setpriv', '--reuid=nobody', '--regid=nogroup',
                   '--clear-groups', 'env', 'HOME=' + tmp])]
        for what, why, prefix in cases:
            for cmd in ('demo', 'test'):
                os.chmod(tmp, 0o777)
                # A command that goes on is stopped, with all it started
                p = subprocess.Popen(
                    prefix + [os.path.join(TOP, 'scripts', cmd)], env=env,
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True,
                    start_new_session=True)
                try:
                    out, _ = p.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, 9)
                    out = p.communicate()[0] + '\n(still running after ' \
                        '60 s: stopped)'
                lines = out.splitlines()
                ok = p.returncode != 0 and len(lines) == 1 and \
                    why in lines[0] and 'supported: Debian 12 (bookworm) ' \
                    'or 13 (trixie)' in lines[0] and not os.path.exists(cache)
                results.record('scripts/%s on %s: one line saying what is '
                               'supported, nothing fetched' % (cmd, what), ok,
                               'exit %d, cache made: %s\n%s' % (
                                   p.returncode, os.path.exists(cache),
                                   out[-2000:]))


def test_apply(results, base):
    # Every patch through git am: not the prefixes kept from a run before
    status, out = script('apply', '--base', base, '--fresh')
    results.record('%s: series applies with git am' % base, status == 0, out)
    return out.strip().splitlines()[-1] if status == 0 else None


def test_b4_quilt(results, base, tree):
    """b4 am takes the mbox; quilt pushes the series file."""
    patches = series(base)
    # Make the mbox b4 would see once the series is sent: a thread, with
    # Message-ID headers (git send-email and b4 send add them).  And b4
    # 0.12 reads a local mbox with the compat32 email policy, which keeps
    # folded headers folded and then fails on them (mail from lore goes
    # through its own policy, which unfolds them): unfold them here.
    mbox = os.path.join(tree, '.git', 'vmmci-series.mbox')
    with open(mbox, 'w') as out:
        for i, p in enumerate(sorted(glob.glob(
                os.path.join(series_dir(base), '0*.patch')))):
            with open(p) as f:
                head, sep, body = f.read().partition('\n\n')
            head = head.replace('\n ', ' ')
            head += '\nMessage-ID: <vmmci-test-%d@localhost>' % i
            if i:
                head += ('\nIn-Reply-To: <vmmci-test-0@localhost>'
                         '\nReferences: <vmmci-test-0@localhost>')
            out.write(head + sep + body)
    work = os.path.join(tree, '.git', 'b4-out')
    subprocess.run(['rm', '-rf', work])
    os.makedirs(work)
    status, out = run(['b4', '--offline-mode', 'am', '--no-cache', '-m', mbox,
                       '-o', work], cwd=tree)
    mbx = glob.glob(os.path.join(work, '*.mbx'))
    ok = status == 0 and len(mbx) == 1
    if ok:
        run(['git', '-C', tree, 'checkout', '-q', '-f', '-B', 'b4test',
             'base'])
        status, out2 = run(['git', '-C', tree, 'am', '-q', mbx[0]])
        ok = status == 0
        out += out2
        run(['git', '-C', tree, 'am', '--abort'])
    results.record('%s: series applies with b4 am' % base, ok, out)

    run(['git', '-C', tree, 'checkout', '-q', '-f', 'base'])
    env = dict(os.environ, QUILT_PATCHES=series_dir(base),
               QUILT_PC=os.path.join(tree, '.git', 'quilt-pc'))
    subprocess.run(['rm', '-rf', env['QUILT_PC']])
    res = subprocess.run(['quilt', 'push', '-a', '-q', '--fuzz=0'], cwd=tree,
                         env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    results.record('%s: series applies with quilt push -a' % base,
                   res.returncode == 0 and len(patches) > 0, res.stdout)
    subprocess.run(['rm', '-rf', env['QUILT_PC']])
    run(['git', '-C', tree, 'checkout', '-q', '-f', 'base'])
    run(['git', '-C', tree, 'clean', '-q', '-f', '-d', '-x'])


def test_abi(results, base, tree):
    """Every sysfs file of the driver is documented, and the kernel's ABI
    tool parses the documentation without complaint."""
    with open(os.path.join(TOP, 'drivers/virtio/virtio_vmmci.c')) as f:
        attrs = re.findall(r'DEVICE_ATTR_(?:ADMIN_)?R[OW]\((\w+)\)',
                           f.read())
    env = dict(os.environ, PATH='/usr/bin:' + os.environ.get('PATH', ''))
    tool = ['perl', 'scripts/get_abi.pl']
    if not os.path.exists(os.path.join(tree, tool[1])):
        tool = ['python3', 'tools/docs/get_abi.py']
    status, out = run(tool + ['validate'], cwd=tree, env=env)
    bad = [line for line in out.splitlines() if 'vmmci' in line]
    missing = []
    for attr in attrs:
        _, found = run(tool + ['search', '/virtio<N>/%s$' % attr],
                       cwd=tree, env=env)
        if 'sysfs-bus-virtio-devices-vmmci' not in found:
            missing.append('%s: not documented' % attr)
    results.record('%s: ABI documents all %d sysfs files, validates clean' %
                   (base, len(attrs)), status == 0 and attrs and not bad and
                   not missing, '\n'.join(bad + missing) or out)


def test_rst(results, base, tree):
    """The admin guide page is reStructuredText without a warning
    (docutils, from Debian's python3-docutils; not a full htmldocs)."""
    page = os.path.join(tree, 'Documentation/admin-guide/vmmci.rst')
    check = ('import docutils.core, sys\n'
             'docutils.core.publish_string(open(sys.argv[1]).read(), '
             'writer_name="pseudoxml", settings_overrides='
             '{"report_level": 2, "halt_level": 2})\n')
    status, out = run(['/usr/bin/python3', '-c', check, page])
    results.record('%s: admin guide parses as reStructuredText cleanly' %
                   base, status == 0 and not out.strip(), out)


def test_checkpatch(results, base, tree):
    # checkpatch runs spdxcheck.py with the python3 on PATH: use Debian's,
    # which has the python3-ply and python3-git it needs.
    env = dict(os.environ, PATH='/usr/bin:' + os.environ.get('PATH', ''))
    for patch in series(base):
        status, out = run(['perl', 'scripts/checkpatch.pl', '--strict',
                           '--show-types', patch], cwd=tree, env=env)
        m = re.search(r'total: (\d+) errors, (\d+) warnings, (\d+) checks', out)
        clean = m is not None and m.groups() == ('0', '0', '0')
        results.record('%s: checkpatch --strict clean: %s' %
                       (base, os.path.basename(patch)), clean, out)


def build_args(base):
    """Where a base's static builds go.  The bases the e2e suite boots
    build in its directory with its debug config (ci/kconfig/debug.config,
    as harness.build_kernel does), so that a new machine builds each of
    their trees once and the suite's kernels are incremental after them.
    A backport builds drivers/virtio only, in the directory of its KUnit
    test build: what the series changes, W=1 and sparse, without a kernel
    of its own (the DKMS route loads the backport's driver into Debian's
    kernel of that base)."""
    if base in (CONF['DEFAULT_BASE'], CONF['UPSTREAM_BASE']):
        return ['--name', 'e2e', '--config', 'debug']
    return ['--name', 'kunit', '--targets', 'drivers/virtio/']


def build_full(results, base, configs, what, touched):
    """Build the full series with the config fragments given, W=1."""
    args = build_args(base)
    for cfg in configs:
        args += ['--config', cfg]
    return build(results, '%s: full series, %s' % (base, what), base,
                 *args, 'W=1', check_files=touched)


def test_builds(results, base):
    """The builds of a base.  On the upstream base, what the series is
    sent as: every prefix (bisectable) and the full series with the
    driver =m, =y, =n, and =m with virtio_pci a module and no PTP.  On the
    others (Debian's 6.12 and the backports) the full series, the driver
    =m and =y (a backport: drivers/virtio only, see build_args).  Each:
    W=1 clean in the files the series touches; with =m, sparse too, and
    the module alias udev loads it by (but on a backport)."""
    touched = touched_files(base)
    canonical = base == CONF['UPSTREAM_BASE']
    patches = series(base)
    for k in range(1, len(patches)) if canonical else ():
        if not builds_read(patch_files(patches[k - 1])):
            # Its tree builds as the one before it, already built
            print('test: %s: patch %d changes no file the build reads: '
                  'prefix 1-%d builds as 1-%d' % (base, k, k, k - 1),
                  flush=True)
            continue
        cfg = 'vmmci-m' if k >= DRIVER_PATCH else 'base'
        build(results, '%s: patches 1-%d build (W=1, %s)' % (base, k, cfg),
              base, *build_args(base), '--upto', str(k), '--config', cfg,
              'W=1', check_files=touched)

    # The last prefix is this build: the full series, the driver =m
    outdir = build_full(results, base, ['vmmci-m'], 'driver =m', touched)
    if outdir:
        tree = tree_path(base)
        # Debian 12's sparse is too old for 7.3: make would skip the
        # check and say so (scripts/build-sparse)
        status, sparse = script('build-sparse')
        if status == 0:
            sparse = sparse.strip().splitlines()[-1]
            status, out = run(['make', '-C', tree, 'O=' + outdir,
                               'ARCH=x86_64', 'C=2', 'CHECK=' + sparse, 'W=1',
                               'drivers/virtio/'])
        else:
            out = sparse
        bad = warnings_in(out, touched)
        skipped = 'sparse is not available or not up to date' in out
        checked = re.findall(r'^\s+CHECK\s+(\S+)', out, re.M)
        results.record('%s: sparse (C=2) clean in drivers/virtio (%d files '
                       'checked)' % (base, len(checked)),
                       status == 0 and not bad and not skipped and
                       any(f.endswith('virtio_vmmci.c') for f in checked),
                       '\n'.join(bad) or out)
        ko = os.path.join(outdir, 'drivers/virtio/virtio_vmmci.ko')
        if base not in BACKPORT_BASES:
            status, out = run(['modinfo', '-F', 'alias', ko])
            results.record('%s: module alias for udev autoload' % base,
                           'virtio:d0000FFFFv00000B5D' in out, out)

    variants = [(['ptp-y', 'vmmci-y'], 'driver =y')]
    if canonical:
        # Two variants in one build: what each changes (the PTP stubs,
        # the transport's exports to a module) do not meet.  The driver
        # =y last: the e2e suite's first kernel (ci/e2e/scenarios.py)
        # is that build again, with nothing to rebuild.
        variants = [(['vmmci-n'], 'driver =n'),
                    (['virtio-pci-m', 'no-ptp'],
                     'virtio_pci =m, driver =m without PTP')] + variants
    for cfgs, what in variants:
        build_full(results, base, cfgs, what, touched)
    if not canonical:
        return

    # With virtio_pci or PTP support a module, asking for the driver
    # built in yields =m
    for cfg, what in (('virtio-pci-m', 'virtio_pci'), ('ptp-m', 'PTP')):
        status, out = script('build', '--base', base, '--config-only',
                             '--config', cfg, '--config', 'vmmci-y')
        got = ''
        if status == 0:
            with open(os.path.join(out.strip().splitlines()[-1],
                                   '.config')) as f:
                got = ''.join(l for l in f if 'CONFIG_VIRTIO_VMMCI' in l)
        results.record('%s: driver =y not selectable with %s =m' %
                       (base, what), got.strip() == 'CONFIG_VIRTIO_VMMCI=m',
                       out + got)


# Linux 7.3 wants LLVM 17 or later: Debian 12's clang-19
LLVM = 'LLVM=-19'
# spatch compiles the kernel's "@script:ocaml@" rules with ocamlopt, and
# Debian 13's loads libpython3.13.so (in libpython3.13-dev) for the
# "@script:python@" ones: coccinelle pulls in neither
BOT_PKGS = ('clang-19', 'lld-19', 'llvm-19', 'coccinelle', 'ocaml-nox',
            'libpython3-dev')
# A file misc/array_size.cocci reports, for coccicheck's positive control
COCCI_CONTROL = os.path.join(TOP, 'ci', 'static', 'cocci-control.c')


def test_bot_builds(results, base):
    """What the kernel's build bots build beyond gcc on x86_64, for the
    directory the series lives in, with the full series: clang with the
    driver =m and =y, and a 32-bit kernel (vmd runs i386 guests)."""
    harness.need_pkgs(*BOT_PKGS)
    touched = touched_files(base)
    for cfgs, what, var, name in (
            (['vmmci-m'], 'clang (%s), driver =m' % LLVM, LLVM, 'clang'),
            (['ptp-y', 'vmmci-y'], 'clang (%s), driver =y' % LLVM, LLVM,
             'clang'),
            (['vmmci-m', 'i386'], 'i386, driver =m', 'ARCH=i386', 'i386')):
        args = ['--name', name, '--targets', 'drivers/virtio/']
        for cfg in cfgs:
            args += ['--config', cfg]
        outdir = build(results, '%s: %s: drivers/virtio builds, W=1 clean' %
                       (base, what), base, *args, var, 'W=1',
                       check_files=touched)
        if outdir and var == 'ARCH=i386':
            test_no_libgcc_division(results, base, outdir, touched)


# What gcc calls for a 64-bit division or modulo on a 32-bit target; the
# kernel does not provide them (div_u64() and friends instead).
LIBGCC_DIVISION = re.compile(r'\b__(u?div|u?mod|u?divmod)[dt]i[34]\b')


def test_no_libgcc_division(results, base, outdir, touched):
    """The 32-bit objects of the files the series touches call no libgcc
    64-bit division helper.  The build bots find one when modpost says
    "__udivdi3 undefined" at the link, which a drivers/virtio/ build
    does not reach; nm on the objects finds the same calls."""
    objs = [os.path.join(outdir, f[:-2] + '.o') for f in sorted(touched)
            if f.endswith('.c')]
    objs = [o for o in objs if os.path.exists(o)]
    bad = []
    for obj in objs:
        rel = os.path.relpath(obj, outdir)
        status, out = run(['nm', '-u', obj])
        if status:
            bad.append('%s: nm failed: %s' % (rel, out.strip()))
            continue
        bad += ['%s: %s' % (rel, line.split()[-1])
                for line in out.splitlines() if LIBGCC_DIVISION.search(line)]
    results.record('%s: i386: no 64-bit division through libgcc (%d objects'
                   ')' % (base, len(objs)),
                   not bad and any(o.endswith('/virtio_vmmci.o')
                                   for o in objs), '\n'.join(bad) or
                   'objects: %s' % objs)


def test_static_tools(results, base):
    """coccinelle (every coccicheck script, report mode) on drivers/virtio
    with the full series, and kernel-doc -Wall on the files it touches
    and on the repository's driver as it is: nothing reported for them."""
    harness.need_pkgs(*BOT_PKGS)
    touched = touched_files(base)
    status, out = script('build', '--base', base, '--config', 'vmmci-m',
                         '--config-only')
    if status:
        results.record('%s: coccicheck on drivers/virtio' % base, False, out)
        return
    outdir = out.strip().splitlines()[-1]
    with open(os.path.join(outdir, 'source-tree')) as f:
        tree = f.read().strip()
    # M= names the sources by their absolute path: a relative one is
    # taken from the build directory before 6.13 (spatch then finds no C
    # file there and reports nothing, or fails where the directory was
    # never built).  Paths come back absolute, or from 6.13 on relative to
    # drivers/virtio ("./virtio_vmmci.c:12:1-5: WARNING: ...").
    vdir = os.path.join(tree, 'drivers', 'virtio')
    # The positive control, beside the driver for this run only: a file
    # a rule must report shows that spatch really read drivers/virtio
    control = os.path.join(vdir, os.path.basename(COCCI_CONTROL))
    shutil.copy(COCCI_CONTROL, control)
    try:
        status, out = run(['make', '-C', tree, 'O=' + outdir, 'ARCH=x86_64',
                           'coccicheck', 'MODE=report', 'M=' + vdir,
                           'J=%d' % os.cpu_count()])
    finally:
        os.remove(control)
    bad, caught = [], []
    for line in out.splitlines():
        m = re.match(r'^(\S+?):\d+:', line)
        if not m:
            continue
        rel = os.path.relpath(os.path.join(vdir, m.group(1)), tree)
        if rel in touched:
            bad.append(line)
        elif rel == os.path.relpath(control, tree):
            caught.append(line)
    results.record('%s: coccicheck reports its positive control, %s' %
                   (base, os.path.basename(control)), status == 0 and caught,
                   out[-3000:])
    results.record('%s: coccicheck reports nothing in the files the series '
                   'touches' % base, status == 0 and not bad,
                   '\n'.join(bad) or out[-3000:])
    sources = [os.path.join(tree, f) for f in sorted(touched)
               if f.endswith('.c') and os.path.exists(os.path.join(tree, f))]
    sources.append(os.path.join(TOP, 'drivers/virtio/virtio_vmmci.c'))
    # The upstream tree's kernel-doc: 6.1's knows no -Wall
    status, out = run([os.path.join(tree_path(CONF['UPSTREAM_BASE']),
                                    'scripts/kernel-doc'), '-none',
                       '-Wall'] + sources)
    results.record('%s: kernel-doc -Wall reports nothing (%d files)' %
                   (base, len(sources)), status == 0 and not out.strip(),
                   out[-3000:])


def test_deb(results, base):
    """scripts/deb --small: bindeb-pkg makes a linux-image package whose
    virtio_vmmci.ko carries the modalias udev loads it by."""
    status, out = script('deb', '--base', base, '--small',
                         *build_args(base), 'W=1')
    debs = out.strip().splitlines() if status == 0 else []
    image = [d for d in debs if os.path.basename(d).startswith(
        'linux-image-') and '-dbg' not in d]
    ok, detail = False, out[-3000:]
    if len(image) == 1:
        root = os.path.join(os.path.dirname(image[0]), 'root')
        subprocess.run(['rm', '-rf', root])
        run(['dpkg-deb', '-x', image[0], root])
        ko = glob.glob(os.path.join(root, 'lib/modules/*/kernel/drivers/'
                                    'virtio/virtio_vmmci.ko*')) + glob.glob(
            os.path.join(root, 'usr/lib/modules/*/kernel/drivers/virtio/'
                         'virtio_vmmci.ko*'))
        alias = run(['modinfo', '-F', 'alias', ko[0]])[1] if ko else ''
        ok = 'virtio:d0000FFFFv00000B5D' in alias
        detail = '%s\nmodule: %s\nalias: %s' % ('\n'.join(debs), ko, alias)
        subprocess.run(['rm', '-rf', root])
    results.record('%s: scripts/deb --small: bindeb-pkg packages the driver'
                   % base, ok, detail)


def test_debian_pkg(results, base):
    """Debian 13's own kernel packaging: its linux source package of the
    version the committed change of patches/debian/ names, that change
    applied, then the package's own steps (ci/debian_pkg.py); and the
    change applied to the newest version that downloads, if newer."""
    dp = debian_pkg
    # A version without a series is refused, in one line
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, 'debian'))
        with open(os.path.join(tmp, 'debian', 'changelog'), 'w') as f:
            f.write('linux (5.10.226-1) bullseye-security; urgency=high\n')
        status, out = run([os.path.join(TOP, 'scripts', 'debian-pkg'),
                           'make', tmp])
    lines = out.strip().splitlines()
    results.record('scripts/debian-pkg refuses a linux source package of a '
                   'kernel it has no series for (5.10.226-1), in one line '
                   'naming the versions it has',
                   status == 1 and len(lines) == 1 and '5.10' in lines[0] and
                   all(b in lines[0] for b in
                       [CONF['UPSTREAM_BASE'], base] + BACKPORT_BASES), out)
    try:
        want = dp.committed_version()
    except dp.Refused as e:
        results.record("Debian 13's linux source package: the version of "
                       'the committed change is known', False, str(e))
        return
    committed = dp.committed_path(want)
    what = "Debian 13's linux %s source package" % want
    version, pkg, rep, out = dp.fetch_on_host(base, exact=want)
    if 'not-served' in rep:
        results.record('%s: the committed version (of %s) can no longer be '
                       'fetched: run scripts/debian-pkg update' %
                       (what, os.path.relpath(committed, TOP)), False,
                       rep['not-served'])
        return
    if not version:
        results.record('%s is fetched and unpacked' % what, False,
                       rep.get('fetch-failed', out[-3000:]))
        return
    made = dp.make(pkg)
    with open(committed) as f:
        have = f.read()
    results.record('%s: %s is what scripts/debian-pkg makes of %s' %
                   (what, os.path.relpath(committed, TOP),
                    dp.series_dir(version)),
                   have == made, 'out of date: run scripts/debian-pkg update'
                   '\n' + ''.join(list(difflib.unified_diff(
                       have.splitlines(True), made.splitlines(True)))[:40]))
    patch = os.path.join(dp.DEST, 'change.patch')
    with open(patch, 'w') as f:
        f.write(have)
    status, out, rep = dp.in_chroot('check', harness.in_chroot_cache(pkg),
                                    harness.in_chroot_cache(patch))
    applies = rep.get('change-applies', '1').split(' ', 1)
    stack = rep.get('stack-applies', '1 0').split(' ', 2)
    results.record('%s: the change applies with patch -p1 --fuzz=0, and '
                   'dpkg-source applies Debian\'s patches and the series\' '
                   '%d with no fuzz (%s in all)' %
                   (what, len(dp.series_names(version)), stack[1]),
                   applies[0] == '0' and stack[0] == '0',
                   '\n'.join(applies[1:] + stack[2:]) or out[-3000:])
    config = rep.get('config', '1').split(' ', 1)
    opts = config[1].split() if len(config) > 1 else []
    olddef = rep.get('olddefconfig', '1 changed')
    results.record('%s: the amd64 config its rules make has '
                   'CONFIG_VIRTIO_VMMCI=m, CONFIG_VIRTIO_PCI_LEGACY=y and '
                   'CONFIG_PTP_1588_CLOCK_OPTIONAL=y; olddefconfig changes '
                   'nothing' % what,
                   config[0] == '0' and olddef == '0 unchanged' and
                   all(o in opts for o in (
                       'CONFIG_VIRTIO_VMMCI=m', 'CONFIG_VIRTIO_PCI_LEGACY=y',
                       'CONFIG_PTP_1588_CLOCK_OPTIONAL=y')),
                   '%s\nolddefconfig: %s' % (' '.join(opts) or config,
                                             olddef))
    build = rep.get('build', '1').split(' ', 1)
    log = ''
    if os.path.exists(os.path.join(dp.DEST, 'build.log')):
        with open(os.path.join(dp.DEST, 'build.log')) as f:
            log = f.read()
    bad = warnings_in(log, touched_files(base))
    alias = build[1] if len(build) > 1 else ''
    results.record('%s: drivers/virtio/ builds with that config, W=1 clean '
                   'in the series\' files; virtio_vmmci.ko has the alias '
                   'udev loads it by' % what,
                   build[0] == '0' and not bad and
                   'virtio:d0000FFFFv00000B5D' in alias,
                   '\n'.join(bad) or 'alias: %r\n%s' % (alias, log[-2000:]))
    # The day the archive serves a newer package, whether the committed
    # change still applies to it (scripts/debian-pkg update makes a new one)
    newest, npkg, rep, out = dp.fetch_on_host(base, newer_than=want)
    if 'none-newer' in rep:
        results.skip('the newest Debian 13 linux source that downloads is '
                     'the committed version, %s (newer, not downloadable: '
                     '%s): no newer one to apply the change to' %
                     (want, rep['none-newer']))
        return
    if not newest:
        results.record("the newest Debian 13 linux source newer than %s that "
                       'downloads is fetched and unpacked' % want, False,
                       rep.get('fetch-failed', out[-3000:]))
        return
    what = 'the committed change (%s) applies to the newest Debian 13 ' \
        'linux source (%s) with patch --fuzz=0' % (want, newest)
    status, out, rep = dp.in_chroot('apply', harness.in_chroot_cache(npkg),
                                    harness.in_chroot_cache(patch))
    applies = rep.get('change-applies', '1').split(' ', 1)
    results.record(what, applies[0] == '0', '\n'.join(applies[1:]) or
                   out[-3000:])
    subprocess.run(['rm', '-rf', npkg])


def dkms_stage(name):
    """The DKMS package as scripts/dkms stages it, in a directory of the
    cache called name."""
    stage = os.path.join(harness.CACHE, name)
    subprocess.run(['rm', '-rf', stage])
    run([os.path.join(TOP, 'scripts', 'dkms'), 'stage', stage])
    return stage


def dkms_refusal(results, what, kdir, want):
    """scripts/dkms-prepare, in a staged package, for a kernel whose
    headers are kdir: it must fail with a "vmmci: error:" line that
    contains want."""
    stage = dkms_stage('dkms-refusal')
    status, out = run([os.path.join(stage, 'vmmci-prepare'), 'test-kernel',
                       kdir], cwd=stage)
    results.record('dkms: refuses %s' % what,
                   status != 0 and 'vmmci: error: ' in out and want in out,
                   out[-2000:])


# What modinfo shows of the DKMS modules: vmmci_pci binds vmd's device by
# its PCI ids, virtio_vmmci the virtio device vmmci_pci registers.
DKMS_ALIASES = {
    'vmmci_pci.ko': 'pci:v00000B5Dd00000777sv00000B5Dsd0000FFFF',
    'virtio_vmmci.ko': 'virtio:d0000FFFFv00000B5D',
}


def dkms_modules_ok(kos, kver):
    """(ok, detail): kos are the two DKMS modules, built for kver, with
    their aliases."""
    names = sorted(os.path.basename(k) for k in kos)
    if names != sorted(DKMS_ALIASES):
        return False, 'modules: %s' % ', '.join(names)
    info = {os.path.basename(k): run(['/sbin/modinfo', k])[1] for k in kos}
    ok = all(re.search(r'^vermagic:\s+%s ' % re.escape(kver), i, re.M) and
             re.search(r'^alias:\s+%s' % re.escape(DKMS_ALIASES[n]), i, re.M)
             for n, i in info.items())
    return ok, '\n'.join(info.values())


def test_dkms(results):
    """scripts/dkms on Debian's own kernel for this machine: the modules
    build from its headers, W=1 clean, and install with dkms; kernels it
    cannot serve are refused with a reason; then the same for the next
    Debian release's kernels.  Returns {kernel release: directory of the
    .ko files} of the kernels it built for."""
    kver = harness.linux_image_amd64()
    kdir = '/lib/modules/%s/build' % kver
    try:
        kos, out = harness.dkms_modules(kver), ''
    except RuntimeError as e:
        kos, out = [], str(e)
    ok, detail = dkms_modules_ok(kos, kver)
    results.record('dkms: builds vmmci_pci.ko and virtio_vmmci.ko and '
                   'installs them to updates/dkms, for Debian\'s %s' % kver,
                   ok, detail + '\n' + out[-3000:])
    built = {kver: os.path.dirname(kos[0])} if ok else {}

    # The same sources, built by hand with W=1
    stage = dkms_stage('dkms-w1')
    status, out = run([os.path.join(stage, 'vmmci-prepare'), kver, kdir],
                      cwd=stage)
    if status == 0:
        status, out = run(['make', '-C', kdir, 'M=' + stage, 'W=1',
                           'modules'])
    warnings = [line for line in out.splitlines()
                if re.search(r'(warning|error):', line)]
    results.record('dkms: vmmci_pci.c and virtio_vmmci.c build W=1 clean '
                   'against the headers of %s' % kver,
                   status == 0 and not warnings, out[-3000:])

    fake = os.path.join(harness.CACHE, 'dkms-fake-headers')
    subprocess.run(['rm', '-rf', fake])
    os.makedirs(fake)
    with open(os.path.join(kdir, '.config')) as f:
        config = f.read()
    version = run(['make', '-s', '-C', kdir, 'kernelversion'])[1].strip()
    for what, edit, want in (
            ('a kernel that has the driver',
             (r'^CONFIG_VIRTIO=.*$', r'\g<0>\nCONFIG_VIRTIO_VMMCI=m'),
             'already has the vmmci driver'),
            ('a kernel without virtio',
             (r'^CONFIG_VIRTIO=.*$', '# CONFIG_VIRTIO is not set'),
             'has no virtio support'),
            ('a kernel without PCI',
             (r'^CONFIG_PCI=.*$', '# CONFIG_PCI is not set'),
             'has no PCI support'),
            ('a kernel of a base it has no driver for',
             None, 'no driver for Linux 5.10 in this package')):
        with open(os.path.join(fake, '.config'), 'w') as f:
            f.write(re.sub(edit[0], edit[1], config, flags=re.M)
                    if edit else config)
        with open(os.path.join(fake, 'Makefile'), 'w') as f:
            f.write('kernelversion:\n\t@echo %s\n' %
                    (version if edit else '5.10.0'))
        dkms_refusal(results, what, fake, want)
    built.update(test_dkms_next(results))
    return built


def next_kernels():
    """The kernel releases of linux-image-amd64 in the next Debian release
    and in its backports (e.g. 6.12.117+deb13-amd64, 7.3.4+deb13-amd64)."""
    rel = CONF['DEBIAN_NEXT']
    return [harness.linux_image_amd64(rel, suite)
            for suite in (rel, rel + '-backports')]


def test_dkms_next(results):
    """scripts/dkms, run with dkms in a chroot of the next Debian release,
    for its kernel and its backports kernel: both have virtio and
    virtio_pci built in, which the package's own transport does not
    mind.  Returns {kernel release: directory of the .ko files}."""
    rel = CONF['DEBIAN_NEXT']
    try:
        kvers = next_kernels()
    except RuntimeError as e:
        results.record('dkms: kernels of Debian %s found' % rel, False, str(e))
        return {}
    built = {}
    for kver in kvers:
        try:
            kos, detail = harness.dkms_modules(kver), ''
        except RuntimeError as e:
            kos, detail = [], str(e)
        ok, info = dkms_modules_ok(kos, kver)
        results.record('dkms: builds vmmci_pci.ko and virtio_vmmci.ko for '
                       'Debian %s\'s %s (virtio_pci built in), with dkms %s'
                       % (rel, kver, rel), ok, info + '\n' + detail)
        if ok:
            built[kver] = os.path.dirname(kos[0])
    return built


def test_deb_dkms_install(results, deb):
    """The user's recipe in a chroot of the next Debian release: apt
    installs linux-headers-amd64 and the vmmci-dkms package, and dkms
    builds and installs both modules for those headers' kernel."""
    rel = CONF['DEBIAN_NEXT']
    inside = harness.in_chroot_cache(deb)
    status, out = script(
        'chroot', rel, '--backports', '--', 'sh', '-c',
        'apt-get purge -y -q vmmci-dkms >/dev/null 2>&1; '
        't0=$(date +%%s) && '
        'apt-get install -y -q linux-headers-amd64 %s && '
        'echo "took: $(($(date +%%s) - t0)) s" && '
        'kver=$(apt-cache depends linux-headers-amd64 | '
        'sed -n "s/.*Depends: linux-headers-//p" | head -n 1) && '
        'echo "kernel: $kver" && dkms status vmmci && '
        'ls /lib/modules/$kver/updates/dkms/; '
        'rc=$?; apt-get purge -y -q vmmci-dkms >/dev/null 2>&1; exit $rc'
        % inside)
    m = re.search(r'^kernel: (\S+)', out, re.M)
    kver = m.group(1) if m else '?'
    took = re.search(r'^took: (\d+ s)', out, re.M)
    mods = sorted(re.findall(r'^(\w+)\.ko(?:\.\w+)?$', out, re.M))
    ok = status == 0 and mods == ['virtio_vmmci', 'vmmci_pci'] and \
        re.search(r'^vmmci/%s, %s, \S+: installed' %
                  (re.escape(CONF['VMMCI_VERSION']), re.escape(kver)),
                  out, re.M)
    results.record('vmmci-dkms: "apt install linux-headers-amd64 ./%s" in '
                   'Debian %s: dkms installed both modules for %s (%s)' %
                   (os.path.basename(deb), rel, kver,
                    took.group(1) if took else '?'), ok, out[-3000:])


def test_deb_dkms(results):
    """scripts/deb-dkms: a Debian package made with dh-dkms, lintian clean,
    that holds the DKMS package and depends on dkms."""
    status, out = script('deb-dkms')
    deb = out.strip().splitlines()[-1] if status == 0 else ''
    ok, detail = False, out[-3000:]
    if deb.endswith('_all.deb') and os.path.isfile(deb):
        files = run(['dpkg-deb', '-c', deb])[1]
        depends = run(['dpkg-deb', '-f', deb, 'Depends'])[1]
        src = './usr/src/vmmci-%s/' % CONF['VMMCI_VERSION']
        want = ['dkms.conf', 'vmmci-prepare', 'transport/vmmci_pci.c',
                'transport/backports'] + [
            'driver/%s/virtio_vmmci.c' % b for b in
            [CONF['UPSTREAM_BASE'], CONF['DEFAULT_BASE']] + BACKPORT_BASES]
        missing = [w for w in want if ' ' + src + w + '\n' not in files]
        ok = not missing and re.match(r'dkms\b', depends) is not None
        detail = '%s\nDepends: %s\nmissing: %s\n%s' % (deb, depends,
                                                       missing, files)
    results.record('scripts/deb-dkms: vmmci-dkms_%s_all.deb with dh-dkms, '
                   'lintian clean' % CONF['VMMCI_VERSION'], ok, detail)
    return deb if ok else None


def test_checkpatch_transport(results, tree):
    """The DKMS package's own transport, in the kernel's style too."""
    env = dict(os.environ, PATH='/usr/bin:' + os.environ.get('PATH', ''))
    status, out = run(['perl', 'scripts/checkpatch.pl', '--strict',
                       '--show-types', '-f',
                       os.path.join(TOP, 'dkms', 'vmmci_pci.c')],
                      cwd=tree, env=env)
    m = re.search(r'total: (\d+) errors, (\d+) warnings, (\d+) checks', out)
    results.record('checkpatch --strict clean: dkms/vmmci_pci.c',
                   m is not None and m.groups() == ('0', '0', '0'), out)


def test_kunit(results, base):
    """kunit.py run --arch=x86_64 with the driver's kunitconfig, under
    QEMU (this repository's build, with Debian's firmware): every case
    must pass, and at least one must have run."""
    status, out = script('apply', '--base', base)
    if status:
        results.record('%s: KUnit virtio_vmmci suite: series applies' % base,
                       False, out)
        return
    tree = out.strip().splitlines()[-1]
    qemu = harness.build_qemu()
    status, out = run(
        ['python3', 'tools/testing/kunit/kunit.py', 'run', '--arch=x86_64',
         '--qemu_args=' + ' '.join(harness.FIRMWARE),
         '--build_dir=' + os.path.join(harness.CACHE, 'build',
                                       'kunit-x86_64-' + base),
         '--kunitconfig=drivers/virtio/virtio_vmmci.kunitconfig',
         '--jobs=%d' % os.cpu_count(), '--timeout=300'], cwd=tree,
        env=dict(os.environ, PATH=os.path.dirname(qemu) + os.pathsep +
                 os.environ['PATH']))
    cases = re.findall(r'\[(PASSED|FAILED|SKIPPED|CRASHED)\] (vmmci_test_\w+)',
                       out)
    # Every case the test file defines must have run, and passed
    with open(os.path.join(tree, 'drivers/virtio/virtio_vmmci_test.c')) as f:
        defined = set(re.findall(
            r'^static void (vmmci_test_\w+)\(struct kunit \*test\)',
            f.read(), re.M))
    passed = set(c for r, c in cases if r == 'PASSED')
    summary = re.search(r'Testing complete\. (.*)', out)
    results.record('%s: KUnit virtio_vmmci suite under kunit.py (x86_64, '
                   'QEMU): the %d cases the test file defines passed (%s)' %
                   (base, len(defined),
                    summary.group(1) if summary else 'no result'),
                   status == 0 and defined and passed == defined and
                   len(cases) == len(defined),
                   'defined, not passed: %s\n%s' %
                   (' '.join(sorted(defined - passed)), out[-4000:]))


def test_kunit_build(results, base):
    """The KUnit test, a module beside the driver, on x86: W=1 and sparse
    report nothing in the files the series touches (kunit.py's build
    runs neither)."""
    touched = touched_files(base)
    name = ('%s: driver and KUnit test =m: drivers/virtio builds, W=1 and '
            'sparse clean' % base)
    status, sparse = script('build-sparse')
    if status:
        results.record(name, False, sparse)
        return
    sparse = sparse.strip().splitlines()[-1]
    status, out = script('build', '--base', base, '--name', 'kunit',
                         '--targets', 'drivers/virtio/', '--config',
                         'vmmci-m', '--config', 'kunit-m', 'W=1', 'C=2',
                         'CHECK=' + sparse)
    if status:
        results.record(name, False, out)
        return
    outdir = out.strip().splitlines()[-1]
    with open(os.path.join(outdir, 'build.log')) as f:
        log = f.read()
    bad = warnings_in(log, touched)
    built = os.path.exists(os.path.join(outdir, 'drivers/virtio/'
                                        'virtio_vmmci_test.o'))
    results.record(name, built and not bad,
                   '\n'.join(bad) or 'virtio_vmmci_test.o built: %s' % built)


def host_release():
    """The codename of this machine's Debian release (e.g. bookworm)."""
    with open('/etc/os-release') as f:
        return re.search(r'^VERSION_CODENAME=(\S+)', f.read(), re.M).group(1)


def test_fresh_demo(results, rel):
    """The README's first command on a Debian machine where nothing was
    installed: scripts/demo in a new minimal chroot of rel, with the apt
    sources of a fresh install.  For this machine's own release, as root
    and with the repository and the cache at their own paths: nothing is
    rebuilt, but every package the demo needs must be installed by it.
    For the other release, as a user with sudo, with a build cache of
    that user's own (kept between runs, as this machine's is)."""
    if rel == host_release():
        cmd = ['--host-paths', '--', os.path.join(TOP, 'scripts', 'demo')]
        who = 'root'
    else:
        cmd = ['--user', '--', '/vmmci/scripts/demo']
        who = 'a user with sudo'
    status, out = script('chroot', rel, '--name', 'demo-' + rel, '--fresh',
                         *cmd)
    results.record('scripts/demo passes in a fresh minimal Debian %s '
                   'chroot, as %s' % (rel, who), status == 0, out[-3000:])


def in_apt(pkg):
    """Whether this machine's apt sources have the package: that name
    only (apt takes an unknown name with a dot in it for a regular
    expression, and linux-source-6.1 then means linux-source-6.12)."""
    res = subprocess.run(['apt-cache', 'show', pkg], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    return re.search(r'^Package: %s$' % re.escape(pkg), res.stdout,
                     re.M) is not None


def fetch_trees(bases):
    """Fetch the trees of all bases at once (scripts/get-tree; nothing to
    do for a tree already there).  From an empty cache that is unpacking
    three kernel sources and importing each into git, which leaves a core
    idle when done one at a time.  What get-tree would install is
    installed first, in one apt run: apt runs one at a time.  A tree that
    failed is fetched again, with its error shown, where it is used."""
    pkgs = ['xz-utils', 'git', 'ca-certificates'] + [
        'linux-source-' + b for b in bases if in_apt('linux-source-' + b)]
    script('setup', *pkgs)
    procs = [subprocess.Popen(['sh', os.path.join(TOP, 'scripts', 'get-tree'),
                               b], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for b in bases]
    for p in procs:
        p.wait()


class Lane(threading.Thread):
    """Steps, (label, function) pairs, run in order in a thread of their
    own.  A step that raises is a failure of its own, named by its label;
    the lane goes on with the next one."""

    def __init__(self, results, steps):
        super().__init__()
        self.results = results
        self.steps = steps

    def run(self):
        for label, step in self.steps:
            try:
                step()
            except Exception:
                self.results.record('%s ran to the end' % label, False,
                                    traceback.format_exc())


def run_lanes(results, lanes):
    """Run the lanes (lists of steps, see Lane) at the same time."""
    threads = [Lane(results, steps) for steps in lanes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def start_qemu_build():
    """scripts/build-qemu in the background, at low priority: from an
    empty cache it compiles for minutes, and the kernel builds leave a
    core idle while they wait on the disk.  The e2e suite's own call of
    build-qemu waits for its lock and finds it built (or builds it again,
    showing why, if this failed); its output is in the cache."""
    os.makedirs(harness.CACHE, exist_ok=True)
    with open(os.path.join(harness.CACHE, 'build-qemu.log'), 'w') as log:
        return subprocess.Popen(['nice', '-n', '10', os.path.join(
            TOP, 'scripts', 'build-qemu')], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT)


def test_base(results, base, args, built=None):
    """The checks of one base (see the top of this file); built, if
    given, is called when its kernel builds are done."""
    tree = test_apply(results, base)
    if not tree:
        return
    test_abi(results, base, tree)
    test_rst(results, base, tree)
    test_checkpatch(results, base, tree)
    if base == CONF['UPSTREAM_BASE']:
        test_checkpatch_transport(results, tree)
    test_b4_quilt(results, base, tree)
    if args.no_build:
        return
    test_builds(results, base)
    if built:
        built()
    test_static_tools(results, base)
    test_kunit_build(results, base)
    if base == CONF['UPSTREAM_BASE']:
        # kunit.py builds an x86_64 kernel of its own: on the canonical
        # base only, for time (the backports' suites differ in the static stubs
        # 6.1 lacks, and build there W=1 and sparse clean)
        test_kunit(results, base)
        test_bot_builds(results, base)
    if base == CONF['DEFAULT_BASE']:
        test_deb(results, base)
        test_debian_pkg(results, base)


def main():
    ap = argparse.ArgumentParser(
        prog='test',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--base', action='append',
                    help='only this base (repeatable; default: %s and %s, '
                    'and the backports to %s)' %
                    (CONF['DEFAULT_BASE'], CONF['UPSTREAM_BASE'],
                     ', '.join(BACKPORT_BASES)))
    ap.add_argument('--no-build', action='store_true',
                    help='skip the kernel builds (and the e2e suite)')
    ap.add_argument('--no-e2e', action='store_true',
                    help='skip the end-to-end suite')
    ap.add_argument('--e2e-only', action='store_true',
                    help='only the end-to-end suite')
    e2e.add_arguments(ap)
    args = ap.parse_args()
    bases = args.base or [CONF['DEFAULT_BASE'], CONF['UPSTREAM_BASE']] + \
        BACKPORT_BASES

    results = Results()
    status, out = script('setup')
    if status:
        results.record('scripts/setup installs what the tests need', False,
                       out)
        return results.summary()
    try:
        run_tests(results, args, bases)
    except Exception:
        # A crash here is a failure, and the summary stays the last line
        results.record('scripts/test ran to the end', False,
                       traceback.format_exc())
    return results.summary()


def run_tests(results, args, bases):
    """Everything main() runs, recorded in results."""
    if args.e2e_only:
        e2e.run(e2e.prepare(results, CONF['DEFAULT_BASE'], args))
        return
    test_help(results)
    test_unsupported_host(results)
    # regen --check uses every base's tree
    fetch_trees([CONF['DEFAULT_BASE'], CONF['UPSTREAM_BASE']] +
                BACKPORT_BASES)
    with_e2e = not args.no_build and not args.no_e2e
    qemu = start_qemu_build() if with_e2e else None
    test_regen(results)
    if not args.no_build:
        # Built once here, not by two threads below
        script('build-sparse')

    # The upstream base's many builds (prefixes, variants, KUnit, clang,
    # i386) leave a core idle while each links: the backports, the DKMS
    # route and the default base's e2e guests are readied beside them,
    # in a lane of their own.  Each tree is used by one thread at a time:
    # the default base's e2e kernels wait for its checks.
    ready = {'built': {}, 'debian': []}
    # The suites' preparations share the guest packages in the cache
    preparing = threading.Lock()

    def dkms_route():
        deb = test_deb_dkms(results)
        if deb:
            test_deb_dkms_install(results, deb)
        if not args.no_build:
            ready['built'] = test_dkms(results)

    def ready_default():
        with preparing:
            ready['default'] = e2e.prepare(
                results, CONF['DEFAULT_BASE'], args,
                skip=e2e.UPSTREAM_DUPLICATES
                if CONF['UPSTREAM_BASE'] in bases else ())

    def ready_debian():
        with preparing:
            ready['debian'] = [
                (kver, e2e.prepare_debian(results, kver, args, modules))
                for kver, modules in sorted(ready['built'].items())]

    def run_default():
        qemu.wait()
        if ready.get('default'):
            ready['default']()

    side = [('%s: its checks' % b,
             lambda b=b: test_base(results, b, args))
            for b in bases if b in BACKPORT_BASES]
    side.append(('the DKMS route', dkms_route))
    if with_e2e:
        side += [('e2e: readying %s' % CONF['DEFAULT_BASE'], ready_default),
                 ('e2e: readying Debian\'s kernels', ready_debian),
                 ('e2e: %s' % CONF['DEFAULT_BASE'], run_default)]
    side = Lane(results, side)

    # The upstream base's suite starts once its e2e kernels are built,
    # right after its static builds in the same directory, and runs
    # beside the builds after those (KUnit, clang, i386)
    upstream_ready = threading.Event()

    def ready_upstream():
        with preparing:
            ready['upstream'] = e2e.prepare(
                results, CONF['UPSTREAM_BASE'], args,
                e2e.UPSTREAM_SCENARIOS, '[%s] ' % CONF['UPSTREAM_BASE'])
        upstream_ready.set()

    def run_upstream():
        upstream_ready.wait()
        qemu.wait()
        if ready.get('upstream'):
            ready['upstream']()

    upstream = None
    if with_e2e and CONF['UPSTREAM_BASE'] in bases:
        upstream = Lane(results, [('e2e: %s' % CONF['UPSTREAM_BASE'],
                                   run_upstream)])
    if CONF['DEFAULT_BASE'] in bases:
        test_base(results, CONF['DEFAULT_BASE'], args)
    side.start()
    if upstream:
        upstream.start()
    # From here this thread and what it starts yield to the lanes, whose
    # guests keep time against the host (Linux: a thread's own priority,
    # inherited by its children)
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
    try:
        for base in bases:
            if base != CONF['DEFAULT_BASE'] and base not in BACKPORT_BASES:
                test_base(results, base, args, ready_upstream if upstream
                          and base == CONF['UPSTREAM_BASE'] else None)
        if upstream and not upstream_ready.is_set():
            ready_upstream()    # its builds did not run
    finally:
        # Also when this thread failed: the lanes' results come first
        upstream_ready.set()
        side.join()
        if upstream:
            upstream.join()

    if with_e2e:
        qemu.wait()
        # Two lanes of guests, one per core (a guest is one TCG thread)
        lanes = [[('e2e: Debian\'s %s' % kver, suite)
                  for kver, suite in ready['debian'] if suite], []]
        if not args.scenario:
            lanes[1].append(('scripts/demo in a fresh %s chroot' %
                             host_release(),
                             lambda: test_fresh_demo(results, host_release())))
        run_lanes(results, lanes)
        # Alone: from an empty cache it builds its release's QEMU and
        # kernel on both cores
        if not args.scenario:
            for rel in DEBIAN_RELEASES:
                if rel != host_release():
                    run_lanes(results, [[('scripts/demo in a fresh %s '
                                          'chroot' % rel, lambda rel=rel:
                                          test_fresh_demo(results, rel))]])


if __name__ == '__main__':
    sys.exit(main())
