# SPDX-License-Identifier: GPL-2.0
"""The series in Debian's own kernel packaging (scripts/debian-pkg).

update          Fetch Debian 13's `linux` source of the default base (the
                newest that downloads) in a chroot (scripts/chroot) and
                write its change as patches/debian/linux-VERSION-vmmci.patch,
                replacing the one there: what `make` makes of it.
make SRCDIR     The change to the unpacked `linux` source package SRCDIR
                that carries the series of its kernel version: the
                patches of patches/BASE/ (patches/ for the upstream base)
                under debian/patches/features/x86/vmmci/, their lines at
                the end of debian/patches/series, CONFIG_VIRTIO_VMMCI=m
                in debian/config/amd64/config and a debian/changelog
                entry, as one patch for `git am` or `patch -p1` in the
                package's top directory.  A version with no series here
                is refused with one line.
fetch DIR BASE [--exact VERSION | --newer-than VERSION]
                (in a Debian 13 chroot) the newest `linux` source of BASE
                (e.g. 6.12) that downloads, or exactly VERSION, or the
                newest newer than VERSION ("@@ none-newer" if none
                downloads), unpacked into DIR/linux-VERSION
apply PKGDIR PATCH
                (in the chroot) apply PATCH to PKGDIR with patch -p1
                --fuzz=0
check PKGDIR PATCH
                (in the chroot) apply PATCH to PKGDIR, then Debian's patch
                stack with the package's own dpkg-source (no fuzz), make
                the amd64 flavour's config with the package's rules, run
                olddefconfig on it, build drivers/virtio/ W=1 with it and
                read the module's alias.  Prints "@@ KEY VALUE" lines for
                ci/test.py.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                'e2e'))
import harness  # noqa: E402

TOP = harness.TOP
CONF = harness.CONF
# Where the patches go in the package, and the config file Debian keeps
# amd64's options in
FEATURE_DIR = 'debian/patches/features/x86/vmmci'
AMD64_CONFIG = 'debian/config/amd64/config'
# What the package needs to apply its patches, make its config and build
# one directory: its Build-Depends for those steps (pahole: without it
# the config silently loses CONFIG_DEBUG_INFO_BTF)
CHROOT_PKGS = ['dpkg-dev', 'quilt', 'debhelper', 'python3', 'python3-dacite',
               'python3-jinja2', 'gcc', 'libc6-dev', 'make', 'flex', 'bison',
               'bc', 'pahole', 'libelf-dev', 'libssl-dev', 'openssl', 'kmod',
               'xz-utils', 'kernel-wedge']


class Refused(Exception):
    pass


def base_of(version):
    """The series base of a Debian version like 6.12.107-1: 6.12; a base
    this repository has no series for is refused."""
    base = '.'.join(version.split('.')[:2])
    bases = sorted([CONF['UPSTREAM_BASE'], CONF['DEFAULT_BASE']] +
                   CONF.get('BACKPORT_BASES', '').split(),
                   key=lambda b: [int(x) for x in b.split('.')])
    if base not in bases:
        raise Refused('linux %s: no series for %s in this repository, which '
                      'has %s' % (version, base, ', '.join(
                          '%s (%s/)' % (b, os.path.relpath(
                              harness.series_dir(b), TOP)) for b in bases)))
    return base


def series_dir(version):
    """patches/ or patches/BASE/ for a Debian version, from the top."""
    return os.path.relpath(harness.series_dir(base_of(version)), TOP)


def series_names(version):
    return [os.path.basename(p) for p in harness.series(base_of(version))]


def package_version(srcdir):
    with open(os.path.join(srcdir, 'debian', 'changelog')) as f:
        m = re.match(r'linux \((\S+)\) ', f.readline())
    if not m:
        raise Refused('%s: not a linux source package (debian/changelog)'
                      % srcdir)
    return m.group(1)


def add_config(text):
    """CONFIG_VIRTIO_VMMCI=m among the options of the drivers/virtio/Kconfig
    section of Debian's amd64 config, in the name order Debian keeps, or in
    a section of its own."""
    name = 'VIRTIO_VMMCI'
    m = re.search(r'^##\n## file: drivers/virtio/Kconfig\n##\n'
                  r'((?:CONFIG_.*\n|# CONFIG_.*\n)*)', text, re.M)
    if not m:
        return text.rstrip('\n') + '\n\n##\n## file: drivers/virtio/Kconfig' \
            '\n##\nCONFIG_%s=m\n' % name
    at = m.start(1)
    for opt in m.group(1).splitlines(True):
        if re.search(r'CONFIG_(\w+)', opt).group(1) > name:
            break
        at += len(opt)
    return text[:at] + 'CONFIG_%s=m\n' % name + text[at:]


def git(cwd, *args, **kw):
    env = dict(os.environ, GIT_AUTHOR_NAME=CONF['SERIES_AUTHOR_NAME'],
               GIT_AUTHOR_EMAIL=CONF['SERIES_AUTHOR_EMAIL'],
               GIT_COMMITTER_NAME=CONF['SERIES_AUTHOR_NAME'],
               GIT_COMMITTER_EMAIL=CONF['SERIES_AUTHOR_EMAIL'],
               GIT_AUTHOR_DATE=CONF['SERIES_DATE'],
               GIT_COMMITTER_DATE=CONF['SERIES_DATE'])
    return subprocess.run(['git', '-c', 'core.autocrlf=false'] + list(args),
                          cwd=cwd, env=env, check=True, text=True,
                          stdout=subprocess.PIPE, **kw).stdout


def make(srcdir):
    """The packaging change for the unpacked package srcdir, as text."""
    version = package_version(srcdir)
    patches = harness.series(base_of(version))
    tmp = tempfile.mkdtemp(prefix='vmmci-debian-pkg-')
    try:
        shutil.copytree(os.path.join(srcdir, 'debian'),
                        os.path.join(tmp, 'debian'), symlinks=True)
        git(tmp, 'init', '-q')
        git(tmp, 'add', '-A', '-f')
        git(tmp, 'commit', '-q', '-m', 'linux %s' % version)
        os.makedirs(os.path.join(tmp, FEATURE_DIR))
        for p in patches:
            shutil.copy(p, os.path.join(tmp, FEATURE_DIR))
        with open(os.path.join(tmp, 'debian/patches/series'), 'a') as f:
            f.write('\n# vmd guest support: the vmmci driver\n' + ''.join(
                '%s/%s\n' % (FEATURE_DIR[len('debian/patches/'):],
                              os.path.basename(p)) for p in patches))
        path = os.path.join(tmp, AMD64_CONFIG)
        with open(path) as f:
            text = f.read()
        with open(path, 'w') as f:
            f.write(add_config(text))
        path = os.path.join(tmp, 'debian/changelog')
        with open(path) as f:
            text = f.read()
        date = subprocess.run(['date', '-R', '-d', CONF['SERIES_DATE']],
                              stdout=subprocess.PIPE, text=True,
                              check=True).stdout.strip()
        entry = ('linux (%s+vmmci1) UNRELEASED; urgency=medium\n\n'
                 '  * [x86] Add virtio_vmmci, the driver for the VMM control '
                 'interface of\n'
                 '    OpenBSD\'s vmd, and the virtio_pci quirk it needs '
                 '(features/x86/vmmci/);\n'
                 '    enable VIRTIO_VMMCI as a module.\n\n'
                 ' -- %s <%s>  %s\n\n' % (version, CONF['SERIES_AUTHOR_NAME'],
                                          CONF['SERIES_AUTHOR_EMAIL'], date))
        with open(path, 'w') as f:
            f.write(entry + text)
        git(tmp, 'add', '-A', '-f')
        body = textwrap.fill(
            'The patches of the vmmci series for Linux %s (%s/ of the vmmci '
            'repository, which generates this change with scripts/debian-pkg) '
            'under %s/, listed after Debian\'s own in debian/patches/series, '
            'and CONFIG_VIRTIO_VMMCI=m in %s: it depends on VIRTIO, X86 and '
            'PTP_1588_CLOCK_OPTIONAL, which the config has.' % (
                base_of(version), series_dir(version),
                FEATURE_DIR, AMD64_CONFIG), 72, break_on_hyphens=False)
        git(tmp, 'commit', '-q', '-F', '-', input=(
            '[x86] Add the vmmci driver for guests of OpenBSD\'s vmd\n\n' +
            body + '\n'))
        return git(tmp, 'format-patch', '-1', '--stdout', '--zero-commit',
                   '--no-signature')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sh(cmd, cwd=None):
    """Run a shell command; (status, output)."""
    res = subprocess.run(cmd, shell=True, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    return res.returncode, res.stdout


def report(key, value):
    print('@@ %s %s' % (key, value.replace('\n', '\\n')), flush=True)


def version_key(v):
    return [int(x) if x.isdigit() else x for x in re.split(r'[.~+-]', v)]


def fetch(dest, base, exact=None, newer_than=None):
    """In the chroot: deb-src for its release, then the linux source of
    base that is version exact, or else the newest that downloads (an
    archive may serve only some), of those newer than newer_than if
    given; unpacked into dest/linux-VERSION."""
    release = sh('. /etc/os-release; echo $VERSION_CODENAME')[1].strip()
    with open('/etc/apt/sources.list.d/vmmci-deb-src.sources', 'w') as f:
        f.write('Types: deb-src\nURIs: http://deb.debian.org/debian\n'
                'Suites: %s %s-updates\nComponents: main\n\n'
                'Types: deb-src\nURIs: http://deb.debian.org/debian-security\n'
                'Suites: %s-security\nComponents: main\n'
                % (release, release, release))
    status, out = sh('apt-get -q update')
    if status:
        report('fetch-failed', out[-2000:])
        return 1
    out = sh('apt-cache showsrc linux')[1]
    listed = sorted(set(re.findall(r'^Version: (%s\.\S+)$' %
                                   re.escape(base), out, re.M)),
                    key=version_key, reverse=True)
    if exact:
        versions = [exact]
    else:
        versions = [v for v in listed if not newer_than or
                    version_key(v) > version_key(newer_than)]
    os.makedirs(dest, exist_ok=True)
    tried = []
    for v in versions:
        status, out = sh('apt-get -q source --download-only linux=%s' % v,
                         cwd=dest)
        if status == 0:
            break
        tried.append('%s (%s)' % (v, '404' if '404' in out else
                                  'failed' if v in listed else 'not listed'))
    else:
        if exact:
            report('not-served', '%s; deb.debian.org\'s debian and '
                   'debian-security list %s' % (
                       ', '.join(tried), ', '.join(listed) or 'none'))
        elif newer_than:
            report('none-newer', ', '.join(tried) or 'none listed')
            return 0
        else:
            report('fetch-failed', 'no linux %s source downloads: %s' %
                   (base, ', '.join(tried) or 'none listed'))
        return 1
    pkg = os.path.join(dest, 'linux-' + v)
    shutil.rmtree(pkg, ignore_errors=True)
    status, out = sh('dpkg-source --no-check -x linux_%s.dsc %s' % (v, pkg),
                     cwd=dest)
    if status:
        report('fetch-failed', out[-2000:])
        return 1
    report('not-downloadable', ', '.join(tried) or 'none')
    report('fetched', '%s %s' % (v, pkg))
    return 0


def apply_change(pkg, patch):
    """In the chroot: PATCH applied to the package's top directory, with
    no fuzz; its status."""
    status, out = sh('patch -p1 --fuzz=0 --no-backup-if-mismatch < %s'
                     % patch, cwd=pkg)
    report('change-applies', '%d %s' % (status, out[-1500:]))
    return status


def check(pkg, patch):
    """In the chroot: the change and the package's own steps."""
    if apply_change(pkg, patch):
        return 1
    status, out = sh('dpkg-source --before-build .', cwd=pkg)
    applied = sh('cat .pc/applied-patches', cwd=pkg)[1].split()
    report('stack-applies', '%d %d %s' % (status, len(applied), out[-1500:]))
    if status:
        return 1
    # The changelog entry makes debian/rules regenerate debian/control,
    # which ends in an error by design, once, as after any such change
    status, out = sh('debian/rules debian/control', cwd=pkg)
    if status and 'fail intentionally' in out:
        status, out = sh('debian/rules debian/control', cwd=pkg)
    if not status:
        status, out = sh('make -f debian/rules.gen '
                         'setup_amd64_none_amd64_image', cwd=pkg)
    build = os.path.join(pkg, 'debian/build/build_amd64_none_amd64')
    if status:
        report('config', '1 ' + out[-2000:])
        return 1
    with open(os.path.join(build, '.config')) as f:
        config = f.read()
    report('config', '0 ' + ' '.join(re.findall(
        r'^(?:CONFIG_VIRTIO_VMMCI|CONFIG_VIRTIO_PCI_LEGACY|CONFIG_VIRTIO_PCI|'
        r'CONFIG_PTP_1588_CLOCK|CONFIG_PTP_1588_CLOCK_OPTIONAL)=.*$|'
        r'^# CONFIG_VIRTIO_VMMCI is not set$', config, re.M)))
    make_ = 'make -C debian/build/source_none O=%s -j%d' % (
        build, os.cpu_count())
    status, out = sh(make_ + ' olddefconfig', cwd=pkg)
    with open(os.path.join(build, '.config')) as f:
        after = f.read()
    report('olddefconfig', '%d %s' % (status, 'unchanged' if after == config
                                      else 'changed'))
    status, out = sh('%s modules_prepare && %s W=1 drivers/virtio/ && '
                     '%s W=1 KBUILD_MODPOST_WARN=1 CONFIG_DEBUG_INFO_BTF_MODULES='
                     ' drivers/virtio/virtio_vmmci.ko' % (make_, make_, make_),
                     cwd=pkg)
    ko = os.path.join(build, 'drivers/virtio/virtio_vmmci.ko')
    alias = sh('modinfo -F alias %s' % ko)[1].strip() if status == 0 else ''
    report('build', '%d %s' % (status, alias))
    with open(os.path.join(os.path.dirname(patch), 'build.log'), 'w') as f:
        f.write(out)
    return 0


# On the host: the chroot of Debian 13, and where its package is unpacked

RELEASE = CONF['DEBIAN_RELEASES'].split()[-1]
CHROOT = 'debian-pkg'
DEST = os.path.join(harness.CACHE, 'debian-pkg')
COMMITTED = os.path.join(TOP, 'patches', 'debian')


def in_chroot(*cmd):
    """Run this module's cmd in the chroot; (status, output, @@ reports)."""
    res = subprocess.run(
        [os.path.join(TOP, 'scripts', 'chroot'), RELEASE, '--name', CHROOT,
         '--install'] + CHROOT_PKGS + ['--', 'python3', '/vmmci/ci/debian_pkg.py']
        + list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    reports = {}
    for line in res.stdout.splitlines():
        m = re.match(r'^@@ (\S+) ?(.*)$', line)
        if m:
            reports[m.group(1)] = m.group(2).replace('\\n', '\n')
    return res.returncode, res.stdout, reports


def fetch_on_host(base, exact=None, newer_than=None):
    """fetch in the chroot: (version, host path of the unpacked package,
    reports, output), or (None, None, reports, output) if nothing
    downloads."""
    opts = ['--exact', exact] if exact else \
        ['--newer-than', newer_than] if newer_than else []
    status, out, rep_ = in_chroot('fetch', harness.in_chroot_cache(DEST),
                                  base, *opts)
    if status or 'fetched' not in rep_:
        return None, None, rep_, out
    version = rep_['fetched'].split()[0]
    return version, os.path.join(DEST, 'linux-' + version), rep_, out


def committed_path(version):
    return os.path.join(COMMITTED, 'linux-%s-vmmci.patch' % version)


def committed_version():
    """The version of the package the committed change is for, from its
    name in patches/debian/; refused unless there is exactly one."""
    names = sorted(os.listdir(COMMITTED)) if os.path.isdir(COMMITTED) else []
    versions = [m.group(1) for m in (
        re.match(r'^linux-(\S+)-vmmci\.patch$', n) for n in names) if m]
    if len(versions) != 1 or len(names) != 1:
        raise Refused('%s holds %s, not one linux-VERSION-vmmci.patch: run '
                      'scripts/debian-pkg update' % (
                          os.path.relpath(COMMITTED, TOP),
                          ', '.join(names) or 'nothing'))
    return versions[0]


def update():
    version, pkg, rep_, out = fetch_on_host(CONF['DEFAULT_BASE'])
    if not version:
        print(out[-3000:], file=sys.stderr)
        return 1
    os.makedirs(COMMITTED, exist_ok=True)
    for name in os.listdir(COMMITTED):
        os.remove(os.path.join(COMMITTED, name))
    with open(committed_path(version), 'w') as f:
        f.write(make(pkg))
    print(os.path.relpath(committed_path(version), TOP))
    return 0


def main(argv):
    if argv == ['update']:
        return update()
    if len(argv) >= 2 and argv[0] == 'make':
        try:
            sys.stdout.write(make(argv[1]))
        except Refused as e:
            print('debian-pkg: refused: %s' % e, file=sys.stderr)
            return 1
        return 0
    if len(argv) in (3, 5) and argv[0] == 'fetch' and (
            len(argv) == 3 or argv[3] in ('--exact', '--newer-than')):
        opt = {'--exact': 'exact', '--newer-than': 'newer_than'}
        return fetch(argv[1], argv[2], **(
            {opt[argv[3]]: argv[4]} if len(argv) == 5 else {}))
    if len(argv) == 3 and argv[0] == 'apply':
        return 1 if apply_change(argv[1], argv[2]) else 0
    if len(argv) == 3 and argv[0] == 'check':
        return check(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
