# SPDX-License-Identifier: GPL-2.0
"""End-to-end harness: boot the patched kernel under QEMU (TCG) against the
vmmci device model, drive the host side through QMP and the guest through
a shell on its second serial port.

Artifacts (kernels, initramfs images, QEMU) are built into the cache by
prepare(); a Guest is one QEMU run with its own work directory holding the
kernel console log, the shell transcript and QEMU's stderr.
"""

import functools
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CACHE = os.environ.get('VMMCI_CACHE') or os.path.join(
    os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
    'vmmci')
NS = 1000000000
# The QEMU build has no firmware of its own: Debian's seabios and
# qemu-system-data provide it.
FIRMWARE = ['-L', '/usr/share/seabios', '-L', '/usr/share/qemu']

# Kernel messages that must never appear in a test guest's console
SPLAT = re.compile(
    r'BUG:|WARNING:|KASAN|Call Trace:|sleeping function called from|'
    r'possible circular locking|inconsistent lock state|'
    r'possible recursive locking|ODEBUG|Oops|general protection fault|'
    r'Kernel panic|kmemleak: \d+ new suspected|blocked for more than|'
    r'lockdep is turned off|memory leak detector disabled')


def conf():
    """scripts/vmmci.conf: the settings shared by the scripts."""
    values = {}
    with open(os.path.join(TOP, 'scripts', 'vmmci.conf')) as f:
        for line in f:
            m = re.match(r'^([A-Z_]+)="(.*)"$', line.strip())
            if m:
                values[m.group(1)] = m.group(2)
    return values


CONF = conf()


def series_dir(base):
    """Where the series for base is: patches/ for the upstream base,
    patches/BASE/ for the others."""
    if base == CONF['UPSTREAM_BASE']:
        return os.path.join(TOP, 'patches')
    return os.path.join(TOP, 'patches', base)


def series(base):
    """The paths of base's patches, in the order of its series file."""
    d = series_dir(base)
    with open(os.path.join(d, 'series')) as f:
        return [os.path.join(d, line.strip()) for line in f if line.strip()]


# Debian gives a regular user no sbin in PATH; e2fsprogs' and kmod's
# tools (mkfs.ext4, e2fsck, depmod, modinfo) are there
if '/usr/sbin' not in os.environ.get('PATH', '').split(':'):
    os.environ['PATH'] = os.environ.get('PATH', '/usr/bin:/bin') + \
        ':/usr/sbin:/sbin'


def say(msg):
    print('e2e: ' + msg, flush=True)


def run(cmd, **kw):
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, **kw)
    if res.returncode:
        raise RuntimeError('failed (%d): %s' % (res.returncode, ' '.join(cmd)))
    return res.stdout


class Results:
    """Collects test results; the report ends with "N passed, N failed"."""

    def __init__(self):
        self.passed = 0
        self.failed = []
        self.start = time.time()
        # scripts/test runs suites in threads: a result's lines stay together
        self.lock = threading.Lock()

    def _line(self, word, name):
        print('%s %s  [%.1f min]' % (word, name,
                                     (time.time() - self.start) / 60),
              flush=True)

    def record(self, name, ok, detail=''):
        with self.lock:
            self._line('PASS' if ok else 'FAIL', name)
            if ok:
                self.passed += 1
            else:
                self.failed.append(name)
                for line in str(detail).rstrip().splitlines()[-30:]:
                    print('    ' + line, flush=True)

    def skip(self, name):
        """A check that had nothing to run on: a line, not a result."""
        with self.lock:
            self._line('SKIP', name)

    def summary(self):
        if self.failed:
            print('\nfailed:')
            for name in self.failed:
                print('  ' + name)
        print('%d passed, %d failed' % (self.passed, len(self.failed)))
        return 1 if self.failed else 0


# Artifacts

class Kernel:
    """A built guest kernel: bzImage and the initramfs that goes with it."""

    def __init__(self, name, bzimage, initramfs, build_dir=None):
        self.name = name
        self.bzimage = bzimage
        self.initramfs = initramfs
        # Where it was built (for out-of-tree modules), if here
        self.build_dir = build_dir


def need_pkgs(*pkgs):
    """Install the Debian packages named, if missing (scripts/setup)."""
    run([os.path.join(TOP, 'scripts', 'setup')] + list(pkgs))


# What running a guest needs on the host: the libraries and firmware of
# the QEMU that scripts/build-qemu builds (the binary may come from a cache
# built elsewhere, e.g. outside a chroot), and the tools the initramfs
# (busybox, the static guest tool), the disk images and the unpacked
# Debian kernels are made with, and the libraries of GUEST_PROGRAMS that
# a minimal Debian lacks (chronyc's libedit, on Debian 13).
GUEST_HOST_PKGS = ('libglib2.0-0', 'libpixman-1-0', 'libfdt1', 'zlib1g',
                   'seabios', 'qemu-system-data', 'busybox-static', 'cpio',
                   'gcc', 'libc6-dev', 'e2fsprogs', 'kmod', 'libedit2')


def build_qemu(path=None):
    """The QEMU with the vmmci model: path, $VMMCI_QEMU, or the one
    scripts/build-qemu builds (or finds in the cache); and what the host
    needs to run guests with it."""
    need_pkgs(*GUEST_HOST_PKGS)
    if path or os.environ.get('VMMCI_QEMU'):
        return path or os.environ['VMMCI_QEMU']
    out = run([os.path.join(TOP, 'scripts', 'build-qemu')])
    return out.strip().splitlines()[-1]


@functools.lru_cache(maxsize=None)
def host_tsc_khz():
    """The host's TSC rate in kHz (ci/e2e/tsc-khz.c), measured once."""
    os.makedirs(CACHE, exist_ok=True)
    tool = os.path.join(CACHE, 'tsc-khz')
    run(['gcc', '-O2', '-Wall', '-o', tool,
         os.path.join(TOP, 'ci', 'e2e', 'tsc-khz.c')])
    return int(run([tool]).strip())


def _guest_tool(dest):
    src = os.path.join(TOP, 'ci', 'guest', 'vmmci-guest.c')
    run(['gcc', '-static', '-O2', '-Wall', '-o', dest, src])


# Debian programs the guest runs, unpacked from their packages (not
# installed on the host), with the libraries they need from the host.
GUEST_DEBS = ('chrony', 'linuxptp')
GUEST_PROGRAMS = ('usr/sbin/chronyd', 'usr/bin/chronyc', 'usr/sbin/phc_ctl')


def guest_debs():
    """The packages of GUEST_DEBS unpacked into one directory (fetched
    once): where the guest's programs and their files come from."""
    root = os.path.join(CACHE, 'guest-debs')
    done = os.path.join(root, 'unpacked')
    if not os.path.isdir(done):
        say('fetching %s for the guest' % ', '.join(GUEST_DEBS))
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        run(['apt-get', 'download'] + list(GUEST_DEBS), cwd=root)
        for deb in sorted(os.listdir(root)):
            if deb.endswith('.deb'):
                run(['dpkg-deb', '-x', os.path.join(root, deb),
                     done + '.tmp'])
        os.rename(done + '.tmp', done)
    return done


def _copy_program(src, stage, rel):
    """Copy src to stage/rel, and the shared libraries it needs to the
    same paths as on the host."""
    dest = os.path.join(stage, rel)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy(src, dest)
    for line in run(['ldd', src]).splitlines():
        if 'not found' in line:
            raise RuntimeError('%s: %s' % (src, line.strip()))
        m = re.search(r'(/\S+) \(0x', line)
        if m:
            lib = os.path.join(stage, m.group(1).lstrip('/'))
            if not os.path.exists(lib):
                os.makedirs(os.path.dirname(lib), exist_ok=True)
                shutil.copy(m.group(1), lib)     # follows symlinks


def make_initramfs(dest, add_modules=None):
    """An initramfs with busybox, the guest tool, our init and, for a
    modular kernel, the modules add_modules(stage) puts in stage/lib/modules
    (laid out as "make modules_install" does, with modules.dep)."""
    stage = dest + '.d'
    shutil.rmtree(stage, ignore_errors=True)
    for d in ('bin', 'sbin', 'etc', 'proc', 'sys', 'dev', 'mnt', 'tmp',
              'usr/bin', 'usr/sbin', 'lib/modules'):
        os.makedirs(os.path.join(stage, d))
    shutil.copy('/bin/busybox', os.path.join(stage, 'bin', 'busybox'))
    # Applet links point at /bin/busybox, not at the host's path
    for applet in run(['/bin/busybox', '--list-full']).split():
        link = os.path.join(stage, applet)
        if not os.path.lexists(link):
            os.symlink('/bin/busybox', link)
    guest = os.path.join(TOP, 'ci', 'guest')
    shutil.copy(os.path.join(guest, 'init'), os.path.join(stage, 'init'))
    os.chmod(os.path.join(stage, 'init'), 0o755)
    shutil.copy(os.path.join(guest, 'inittab'),
                os.path.join(stage, 'etc', 'inittab'))
    shutil.copy(os.path.join(guest, 'profile'),
                os.path.join(stage, 'etc', 'profile'))
    _guest_tool(os.path.join(stage, 'bin', 'vmmci-guest'))
    debs = guest_debs()
    for rel in GUEST_PROGRAMS:
        _copy_program(os.path.join(debs, rel), stage, rel)
    with open(os.path.join(stage, 'etc', 'passwd'), 'w') as f:
        f.write('root:x:0:0:root:/:/bin/sh\n')
    with open(os.path.join(stage, 'etc', 'group'), 'w') as f:
        f.write('root:x:0:\n')
    if add_modules:
        add_modules(stage)
    with open(dest + '.tmp', 'wb') as out:
        write_cpio_gz(stage, out)
    os.rename(dest + '.tmp', dest)
    shutil.rmtree(stage)


def write_cpio_gz(stage, out):
    """Everything under stage as a gzipped newc cpio archive, written to
    the open file out (the kernel unpacks archives that follow another
    one over it)."""
    listing = run(['find', '.', '-mindepth', '1'], cwd=stage)
    cpio = subprocess.Popen(['cpio', '-o', '-H', 'newc', '--quiet'],
                            cwd=stage, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    gz = subprocess.Popen(['gzip', '-1'], stdin=cpio.stdout, stdout=out)
    cpio.stdin.write(listing.encode())
    cpio.stdin.close()
    cpio.stdout.close()
    if cpio.wait() or gz.wait():
        raise RuntimeError('cpio failed')


def build_kernel(name, base, upto, configs, build_name='e2e'):
    """Build the debug guest kernel (in the build directory build_name,
    incremental between variants) and keep a copy of its bzImage and
    initramfs."""
    args = [os.path.join(TOP, 'scripts', 'build'), '--base', base,
            '--name', build_name]
    if upto is not None:
        args += ['--upto', str(upto)]
    for c in ['debug'] + configs:
        args += ['--config', c]
    # W=1 only adds warnings, but kbuild rebuilds every object whose
    # flags changed: scripts/test builds this directory W=1, and so must
    # this, or each run after it recompiles the whole kernel.
    args.append('W=1')
    say('building guest kernel "%s"' % name)
    build_dir = run(args).strip().splitlines()[-1]
    dest = os.path.join(CACHE, 'e2e', base, name)
    os.makedirs(dest, exist_ok=True)
    shutil.copy(os.path.join(build_dir, 'arch/x86/boot/bzImage'),
                os.path.join(dest, 'bzImage'))
    def modules_install(stage):
        with open(os.path.join(build_dir, 'source-tree')) as f:
            tree = f.read().strip()
        run(['make', '-s', '-C', tree, 'O=' + build_dir, 'ARCH=x86_64',
             'INSTALL_MOD_PATH=' + stage, 'INSTALL_MOD_STRIP=1',
             'modules_install'])

    modular = 'vmmci-m' in configs
    make_initramfs(os.path.join(dest, 'initramfs.cpio.gz'),
                   modules_install if modular else None)
    return Kernel(name, os.path.join(dest, 'bzImage'),
                  os.path.join(dest, 'initramfs.cpio.gz'), build_dir)


def with_module(kernel, source, name):
    """kernel, with the out-of-tree module built from the C file source
    against its build directory (W=1) as /lib/modules/extra/<module>.ko
    in its initramfs: a second cpio archive appended to it, which the
    kernel unpacks over the first.  Fails if the build warns."""
    dest = os.path.join(CACHE, 'e2e', name)
    src = os.path.join(dest, 'src')
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(src)
    shutil.copy(source, src)
    mod = os.path.splitext(os.path.basename(source))[0]
    with open(os.path.join(src, 'Kbuild'), 'w') as f:
        f.write('obj-m := %s.o\n' % mod)
    res = subprocess.run(['make', '-C', kernel.build_dir, 'M=' + src, 'W=1',
                          'modules'], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if res.returncode or re.search(r'(warning|error):', res.stdout):
        raise RuntimeError('building %s:\n%s' % (source, res.stdout[-3000:]))
    stage = os.path.join(dest, 'stage')
    os.makedirs(os.path.join(stage, 'lib', 'modules', 'extra'))
    shutil.copy(os.path.join(src, mod + '.ko'),
                os.path.join(stage, 'lib', 'modules', 'extra'))
    initramfs = os.path.join(dest, 'initramfs.cpio.gz')
    shutil.copy(kernel.initramfs, initramfs)
    with open(initramfs, 'ab') as out:
        write_cpio_gz(stage, out)
    return Kernel(name, kernel.bzimage, initramfs, kernel.build_dir)


def chroot(release, cmd, install=()):
    """Run cmd in scripts/chroot's Debian release, which sees this
    repository at /vmmci and the cache at /cache; return its output."""
    args = [os.path.join(TOP, 'scripts', 'chroot'), release, '--backports']
    if install:
        args += ['--install'] + list(install)
    return run(args + ['--'] + list(cmd))


def linux_image_amd64(release=None, suite=None):
    """The kernel release Debian's linux-image-amd64 depends on (e.g.
    6.1.0-57-amd64): in this machine's apt sources, or in the chroot of
    release, from its suite (e.g. trixie-backports) if given."""
    cmd = ['apt-cache', 'depends',
           'linux-image-amd64' + ('/' + suite if suite else '')]
    out = chroot(release, cmd) if release else run(cmd)
    m = re.search(r'Depends: linux-image-(\S+)', out)
    if not m:
        raise RuntimeError('no linux-image-amd64 in %s: %s' %
                           (suite or release or 'the apt sources',
                            out[-1000:]))
    return m.group(1)


def kernel_release_apt(kver):
    """Where linux-image-KVER comes from: None for this machine's apt
    sources, else the next Debian release (DEBIAN_NEXT, with its
    backports), whose chroot fetches it."""
    res = subprocess.run(['apt-cache', 'show', 'linux-image-' + kver],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return None if res.returncode == 0 else CONF['DEBIAN_NEXT']


def in_chroot_cache(path):
    """The path under CACHE as a chroot (scripts/chroot) sees it."""
    return '/cache/' + os.path.relpath(path, CACHE)


def apt_download(pkgs, dest, release=None):
    """apt-get download the packages into dest, from this machine's apt
    sources or, given a release, from its chroot's."""
    if release:
        chroot(release, ['sh', '-c', 'cd %s && apt-get download %s' %
                         (in_chroot_cache(dest), ' '.join(pkgs))])
    else:
        run(['apt-get', 'download'] + list(pkgs), cwd=dest)


def debian_image(kver):
    """Debian's own linux-image-KVER package, unpacked (not installed)
    under the cache: the directory holding its boot/ and lib/modules/.
    Newer kernels' linux-image is a metapackage: the kernel, its modules
    and the lists of built-in ones are in linux-binary-KVER,
    linux-modules-KVER and linux-base-KVER, unpacked with it."""
    root = os.path.join(CACHE, 'debian-images', kver)
    done = os.path.join(root, 'unpacked')
    if not os.path.isdir(done):
        say('fetching linux-image-%s' % kver)
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        release = kernel_release_apt(kver)
        apt_download(['linux-image-' + kver], root, release)
        image = glob.glob(os.path.join(root, '*.deb'))[0]
        depends = run(['dpkg-deb', '-f', image, 'Depends'])
        parts = sorted(set(re.findall(r'\b(linux-(?:base|binary|modules)-%s)\b'
                                      % re.escape(kver), depends)))
        if parts:
            apt_download(parts, root, release)
        for deb in sorted(glob.glob(os.path.join(root, '*.deb'))):
            run(['dpkg-deb', '-x', deb, done + '.tmp'])
        # Newer images keep their modules in /usr/lib only
        lib = os.path.join(done + '.tmp', 'lib')
        if not os.path.exists(os.path.join(lib, 'modules')):
            shutil.rmtree(lib, ignore_errors=True)
            os.symlink('usr/lib', lib)
        run(['depmod', '-b', done + '.tmp', kver])
        os.rename(done + '.tmp', done)
    return done


def dkms_modules(kver):
    """scripts/dkms build for Debian's kernel KVER, with the dkms and the
    headers of the Debian release that has it (in its chroot if that is
    not this machine's): the .ko files, in CACHE/dkms-modules/KVER."""
    out = os.path.join(CACHE, 'dkms-modules', kver)
    shutil.rmtree(out, ignore_errors=True)
    release = kernel_release_apt(kver)
    if release:
        chroot(release, ['/vmmci/scripts/dkms', 'build', kver,
                         in_chroot_cache(out)],
               install=('linux-headers-' + kver, 'dkms'))
    else:
        run([os.path.join(TOP, 'scripts', 'dkms'), 'build', kver, out])
    return sorted(glob.glob(os.path.join(out, '*.ko')))


def _copy_module(src, dest):
    """Copy a module, uncompressed (busybox modprobe loads plain .ko)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    for ext, tool in (('.xz', 'xz'), ('.zst', 'zstd'), ('.gz', 'gzip')):
        if src.endswith(ext):
            with open(dest[:-len(ext)], 'wb') as out:
                subprocess.run([tool, '-dc', src], stdout=out, check=True)
            return
    shutil.copy(src, dest)


def distro_kernel(name, kver, extra_modules, wanted):
    """A Debian kernel as Debian built it: its vmlinuz, and an initramfs
    with the modules in wanted (and what they depend on) from its package,
    plus extra_modules (the .ko files scripts/dkms built) in updates/dkms,
    where they take precedence over the kernel's own."""
    root = debian_image(kver)
    dest = os.path.join(CACHE, 'e2e', name)
    os.makedirs(dest, exist_ok=True)

    def add_modules(stage):
        top = os.path.join(root, 'lib', 'modules', kver)
        paths = set()
        for mod in wanted:
            out = run(['/sbin/modprobe', '-d', root, '-S', kver,
                       '--show-depends', mod])
            paths.update(re.findall(r'^insmod (\S+)', out, re.M))
        mods = os.path.join(stage, 'lib', 'modules', kver)
        for path in paths:
            rel = os.path.relpath(os.path.realpath(path),
                                  os.path.realpath(top))
            _copy_module(path, os.path.join(mods, rel))
        for f in ('modules.builtin', 'modules.builtin.modinfo',
                  'modules.order'):
            shutil.copy(os.path.join(top, f), mods)
        updates = os.path.join(mods, 'updates', 'dkms')
        os.makedirs(updates)
        for ko in extra_modules:
            shutil.copy(ko, updates)
        run(['depmod', '-b', stage, kver])

    vmlinuz = os.path.join(root, 'boot', 'vmlinuz-' + kver)
    if not os.path.exists(vmlinuz):     # newer images
        vmlinuz = os.path.join(root, 'lib', 'modules', kver, 'vmlinuz')
    shutil.copy(vmlinuz,
                os.path.join(dest, 'bzImage'))
    make_initramfs(os.path.join(dest, 'initramfs.cpio.gz'), add_modules)
    return Kernel(name, os.path.join(dest, 'bzImage'),
                  os.path.join(dest, 'initramfs.cpio.gz'))


def make_disk(path, size_mb=64):
    """A small, empty ext4 image for the guest's virtio-blk disk."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.remove(path)
    with open(path, 'wb') as f:
        f.truncate(size_mb << 20)
    run(['mkfs.ext4', '-q', '-F', '-L', 'vmmcitest', path])


def disk_file(path, name):
    """Contents of /name on the ext4 image, read on the host, or None."""
    res = subprocess.run(['debugfs', '-R', 'cat /' + name, path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    if res.returncode or 'not found' in res.stderr:
        return None
    return res.stdout


def disk_clean(path):
    """e2fsck's verdict on the image: (clean, report)."""
    res = subprocess.run(['e2fsck', '-f', '-n', path],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    state = subprocess.run(['dumpe2fs', '-h', path], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True).stdout
    clean = res.returncode == 0 and re.search(
        r'^Filesystem state:\s+clean$', state, re.M) is not None
    return clean, res.stdout + state


# QMP

class QmpError(RuntimeError):
    pass


class Qmp:
    def __init__(self, path, timeout=30):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.buf = b''
        self.events = []
        self._read()                    # greeting
        self.cmd('qmp_capabilities')

    def _read(self):
        while b'\n' not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError('QMP connection closed')
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)

    def drain_events(self, timeout=0.2):
        """Collect the events QEMU sends within timeout seconds."""
        self.sock.settimeout(timeout)
        try:
            while True:
                msg = self._read()
                if 'event' in msg:
                    self.events.append(msg)
        except (socket.timeout, EOFError, OSError, ValueError):
            pass
        self.sock.settimeout(30)

    def raw(self, name, **args):
        """Send a command; return QEMU's reply as it is."""
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        self.sock.sendall(json.dumps(msg).encode() + b'\n')
        while True:
            reply = self._read()
            if 'event' in reply:
                self.events.append(reply)
            else:
                return reply

    def cmd(self, name, **args):
        reply = self.raw(name, **args)
        if 'error' in reply:
            raise QmpError('%s: %s' % (name, reply['error'].get(
                'desc', str(reply))))
        if 'return' not in reply:
            raise QmpError('%s: unexpected reply %r' % (name, reply))
        return reply['return']

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# A guest

class Guest:
    DEVICE = '/machine/peripheral/vmmci0'

    def __init__(self, qemu, kernel, workdir, device='', disk=None,
                 append='', memory=1024, net=None):
        self.qemu = qemu
        self.kernel = kernel
        self.workdir = workdir
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        self.device = device
        self.disk = disk
        self.append = append
        self.memory = memory
        # a network for the guest's NIC (ntp.NtpNet), or none
        self.net = net
        self.proc = None
        self.qmp = None
        self.sock = None
        self.buf = ''
        self.buf_lock = threading.Condition()
        self.nmark = 0
        self.offset_ns = 0

    def path(self, name):
        return os.path.join(self.workdir, name)

    def start(self):
        dev = 'vmmci,id=vmmci0' + (',' + self.device if self.device else '')
        cmd = [self.qemu] + FIRMWARE + [
               '-M', 'pc', '-accel', 'tcg', '-m', str(self.memory),
               '-nodefaults', '-no-user-config', '-display', 'none',
               '-no-shutdown',
               '-kernel', self.kernel.bzimage,
               '-initrd', self.kernel.initramfs,
               # Without ACPI the guest finds no HPET or PM timer to
               # calibrate its TSC against, and may fall back to 4 ms
               # jiffies; under TCG its TSC is the host's.
               '-append', 'console=ttyS0 acpi=off panic=-1 tsc=reliable '
               'tsc_early_khz=%d ' % host_tsc_khz() + self.append,
               '-chardev', 'file,id=con,path=' + self.path('console.log'),
               '-serial', 'chardev:con',
               '-chardev', 'socket,id=sh,path=%s,server=on,wait=off' %
               self.path('shell.sock'),
               '-serial', 'chardev:sh',
               '-qmp', 'unix:%s,server=on,wait=off' % self.path('qmp.sock'),
               # The model logs every config access vmd would not answer
               # as the guest meant (width, offset, value)
               '-d', 'guest_errors', '-D', self.path('guest_errors.log'),
               '-device', dev]
        if self.disk:
            cmd += ['-drive', 'file=%s,if=virtio,format=raw' % self.disk]
        if self.net:
            cmd += self.net.qemu_args()
        with open(self.path('qemu.cmd'), 'w') as f:
            f.write(' '.join(cmd) + '\n')
        self.stderr = open(self.path('qemu.log'), 'w')
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=self.stderr, stderr=self.stderr)
        self.started = time.time()
        self.qmp = Qmp(self.path('qmp.sock'))
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path('shell.sock'))
        self.transcript = open(self.path('shell.log'), 'w')
        threading.Thread(target=self._reader, daemon=True).start()
        return self

    def _reader(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                data = b''
            text = data.decode(errors='replace')
            with self.buf_lock:
                self.buf += text
                if not data:
                    self.buf += '\0'
                self.buf_lock.notify_all()
            if not data:
                return
            self.transcript.write(text)
            self.transcript.flush()

    def _wait_for(self, pattern, start, timeout):
        deadline = time.time() + timeout
        with self.buf_lock:
            while True:
                m = pattern.search(self.buf, start)
                if m:
                    return m
                left = deadline - time.time()
                if left <= 0 or '\0' in self.buf[start:]:
                    return None
                self.buf_lock.wait(min(left, 0.5))

    def send(self, text):
        self.sock.sendall(text.encode())

    def boot(self, timeout=240):
        """Start QEMU and wait for the guest shell; quiet its echo."""
        self.start()
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.buf_lock:
                start = len(self.buf)
            self.send('\n')
            if self._wait_for(re.compile('guest# '), start, 2):
                break
            if self.proc.poll() is not None:
                break
        else:
            raise TimeoutError('no guest shell after %d s' % timeout)
        if self.proc.poll() is not None:
            raise RuntimeError('QEMU exited during boot')
        self.boot_s = time.time() - self.started
        self.sh('stty -echo; PS1=""')
        return self

    def sh(self, cmd, timeout=60, check=True):
        """Run cmd in the guest shell; return its output (stdout+stderr)."""
        self.nmark += 1
        marker = re.compile(r'__VMMCI_RC_%d_(\d+)__' % self.nmark)
        with self.buf_lock:
            start = len(self.buf)
        self.send('%s 2>&1; echo __VMMCI_RC_%d_$?__\n' % (cmd, self.nmark))
        m = self._wait_for(marker, start, timeout)
        if not m:
            raise TimeoutError('guest command timed out: %s' % cmd)
        out = self.buf[start:m.start()]
        # An echoed command line, if echo was still on, ends with the marker
        # text itself; drop everything up to it.
        echo = out.find('__VMMCI_RC_%d_$?__' % self.nmark)
        if echo >= 0:
            out = out[echo + len('__VMMCI_RC_%d_$?__' % self.nmark):]
        out = out.replace('\r', '').replace('guest# ', '').strip('\n')
        rc = int(m.group(1))
        if check and rc:
            raise RuntimeError('guest command failed (%d): %s\n%s' %
                               (rc, cmd, out))
        return out

    def sh_async(self, cmd):
        """Send a command without waiting for it."""
        self.send(cmd + '\n')

    # host side

    def get(self, prop):
        return self.qmp.cmd('qom-get', path=self.DEVICE, property=prop)

    def set(self, prop, value):
        if prop == 'host-offset-ns':
            self.offset_ns = value
        return self.qmp.cmd('qom-set', path=self.DEVICE, property=prop,
                            value=value)

    def request(self, what):
        return self.set('request', what)

    def host_now_ns(self):
        """The model's host clock, without skew (see host-skew-ppb)."""
        return time.time_ns() + self.offset_ns

    def clock_offset(self, samples=9):
        """Guest CLOCK_REALTIME minus model host time, measured through the
        shell, independently of the driver and of the device: one guest
        program (vmmci-guest now-loop) prints its clock for each line sent,
        so that no fork or exec (a hundred ms and more in a debug guest
        under TCG) sits in the round trip; the sample with the smallest
        round trip wins.  Returns (offset_ns, uncertainty_ns)."""
        reply = re.compile(r'T (\d+)\.(\d+)\r?\n')
        with self.buf_lock:
            start = len(self.buf)
        self.send('vmmci-guest now-loop %d\n' % samples)
        if not self._wait_for(re.compile(r'now-loop ready\r?\n'), start, 60):
            raise TimeoutError('vmmci-guest now-loop did not start')
        best = None
        for _ in range(samples):
            with self.buf_lock:
                pos = len(self.buf)
            t0 = time.time_ns()
            self.send('\n')
            m = self._wait_for(reply, pos, 30)
            t1 = time.time_ns()
            if not m:
                raise TimeoutError('no time from vmmci-guest now-loop')
            guest = int(m.group(1)) * NS + int(m.group(2))
            mid = (t0 + t1) // 2 + self.offset_ns
            cand = (guest - mid, (t1 - t0) // 2)
            if best is None or cand[1] < best[1]:
                best = cand
        self.sh('true')
        return best

    def probe(self, samples=20):
        """Guest CLOCK_REALTIME minus host time, read in the guest from the
        device's registers by vmmci-guest, independently of the driver;
        best of samples.  Returns (offset_ns, bound_ns)."""
        off, bound = self.sh('vmmci-guest probe %d' % samples).split()
        return int(off), int(bound)

    def ref_offset(self, samples=20):
        """Guest CLOCK_REALTIME minus the host clock the model reports, by
        the model's test-only time probe (device time-probe=on), which
        shares neither the time registers nor the driver's estimator: of
        samples writes, the one with the narrowest bracket (t1, t2) around
        the model's stamp.  Returns (offset_ns, bound_ns)."""
        self.set('time-probe-log', '')
        self.sh('vmmci-guest ref %d' % samples)
        taken = self._time_probe_samples()
        if not taken:
            raise RuntimeError('the time probe took no sample')
        return min(taken, key=lambda s: s[1])

    def _time_probe_samples(self):
        """The time probe's samples since its log was cleared, in order:
        (guest minus host ns, bound ns) from the guest's bracket (t1, t2)
        around the model's stamp."""
        out = []
        for entry in filter(None, self.get('time-probe-log').split(',')):
            t1, host, t2 = (int(x) for x in entry.split(':'))
            out.append(((t1 + t2) // 2 - host, (t2 - t1 + 1) // 2))
        return out

    # Time-probe samples per drift read: the narrowest is kept; the first
    # after an exec is slowed by translating the code (TCG).
    DRIFT_REF_SAMPLES = 3
    # The model keeps the last 64 samples (VMMCI_PROBE_LOG, ci/qemu/vmmci.c)
    TIME_PROBE_LOG = 64

    def drift_read(self, n):
        """n reads of drift_ns, a second apart (vmmci-guest drift-read):
        dicts of drift_ns, the register probe read
        right after it (reg, reg_bound) and, with the time probe on, the
        narrowest of the samples taken between the two (ref, ref_bound).
        One guest process does it all, so a skewed host clock moves the
        truth by no more than the skew times a few microseconds."""
        k = self.DRIFT_REF_SAMPLES
        reads = []
        while len(reads) < n:
            m = min(n - len(reads), self.TIME_PROBE_LOG // k)
            self.set('time-probe-log', '')
            out = self.sh('vmmci-guest drift-read %d %d' % (m, k),
                          timeout=m * 5 + 60).splitlines()
            refs = self._time_probe_samples()
            if refs and len(refs) != k * len(out):
                raise RuntimeError('%d time-probe samples for %d drift reads'
                                   % (len(refs), len(out)))
            for i, line in enumerate(out):
                drift, reg, reg_bound = (int(x) for x in line.split())
                reads.append({'drift': drift, 'reg': reg,
                              'reg_bound': reg_bound})
                if refs:
                    reads[-1]['ref'], reads[-1]['ref_bound'] = \
                        min(refs[i * k:(i + 1) * k], key=lambda s: s[1])
            if len(out) < m:
                break       # ENODATA: drift_ns had no valid measurement
        return reads

    def sysfs(self, attr, check=True):
        """The driver's sysfs file attr; with check=False, a read error
        (e.g. ENODATA) comes back as the error text."""
        return self.sh('cat /sys/bus/virtio/drivers/virtio_vmmci/*/%s' % attr,
                       check=check)

    def wait_console(self, text, timeout):
        """Wait until the kernel console shows text; True if it did."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.console():
                return True
            time.sleep(0.5)
        return False

    def clock_sets(self):
        """How many times the guest's CLOCK_REALTIME was set since boot,
        by anyone, as the guest's timerfd watcher (vmmci-guest watch-sets,
        started by /init) saw it; sets closer together than it wakes up
        count once."""
        out = self.sh('tail -n 1 /tmp/clock-sets')
        m = re.match(r'^(?:armed|set (\d+))$', out)
        if not m:
            raise RuntimeError('no clock-set watcher in the guest: %r' % out)
        return int(m.group(1) or 0)

    def wait_clock_set(self, count, timeout):
        """Wait until the clock was set more than count times; the new
        count, or None on timeout."""
        deadline = time.time() + timeout
        while True:
            now = self.clock_sets()
            if now > count:
                return now
            if time.time() > deadline:
                return None
            time.sleep(0.2)

    def steps_logged(self, since=0):
        """The offsets in ns of the driver's "clock stepped by" log lines
        on the console after character since (rate-limited: at most ten
        in five seconds are printed)."""
        return [int(v) for v in re.findall(r'clock stepped by (-?\d+) ns',
                                           self.console()[since:])]

    def wait_end(self, timeout):
        """Wait until the VM has ended (QEMU runs with -no-shutdown, so it
        stays to be inspected); return the host CLOCK_REALTIME in ns of
        QEMU's SHUTDOWN event, or None on timeout."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for ev in self.qmp.events:
                if ev['event'] == 'SHUTDOWN':
                    ts = ev['timestamp']
                    return ts['seconds'] * NS + ts['microseconds'] * 1000
            if self.proc.poll() is not None:
                return None
            try:
                self.qmp.cmd('query-status')
            except (OSError, EOFError):
                return None
            time.sleep(0.05)
        return None

    def console(self):
        try:
            with open(self.path('console.log'), errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def qemu_log(self):
        with open(self.path('qemu.log'), errors='replace') as f:
            return f.read()

    def device_errors(self):
        """The model's complaints about the guest's accesses to vmmci."""
        try:
            with open(self.path('guest_errors.log'), errors='replace') as f:
                return [l.rstrip() for l in f if l.startswith('vmmci:')]
        except FileNotFoundError:
            return []

    def splats(self):
        return [line for line in self.console().splitlines()
                if SPLAT.search(line)]

    def end_reason(self):
        m = re.search(r'vmmci: end-reason=(\S+):', self.qemu_log())
        return m.group(1) if m else None

    def close(self):
        """End QEMU; closing a second time does nothing."""
        if self.qmp:
            try:
                self.qmp.cmd('quit')
            except (OSError, EOFError, QmpError):
                pass
            self.qmp.close()
            self.qmp = None
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.sock:
            self.sock.close()
