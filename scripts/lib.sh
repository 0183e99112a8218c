# SPDX-License-Identifier: GPL-2.0
#
# Shared helpers for the scripts in this directory.  Sourced, not run.
#
# Everything that is downloaded or built lives under $VMMCI_CACHE
# (default ~/.cache/vmmci), never inside the repository.

TOP=$(cd "$(dirname "$0")/.." && pwd)
# Debian gives a regular user no sbin in PATH; e2fsprogs' and kmod's
# tools are there
case ":$PATH:" in
*:/usr/sbin:*) ;;
*) PATH=$PATH:/usr/sbin:/sbin ;;
esac
VMMCI_CACHE=${VMMCI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmmci}
JOBS=${JOBS:-$(nproc)}

. "$TOP/scripts/vmmci.conf"

say() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
}

die() {
	say "error: $*"
	exit 1
}

# apt-get as root, or through sudo; waits for a concurrent apt to finish.
apt_get() {
	if [ "$(id -u)" -eq 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get \
			-o DPkg::Lock::Timeout=900 "$@"
	else
		sudo DEBIAN_FRONTEND=noninteractive apt-get \
			-o DPkg::Lock::Timeout=900 "$@"
	fi
}

# need_pkgs PKG...: install the Debian packages that are missing.
need_pkgs() {
	missing=
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'ok installed' || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	say "installing:$missing"
	mkdir -p "$VMMCI_CACHE"
	# A log of its own: scripts/test installs from two threads at once
	apt_log=$VMMCI_CACHE/apt.$$.log
	# shellcheck disable=SC2086
	if ! { [ -f "$VMMCI_CACHE/.apt-updated" ] || apt_get update -q; } \
		>"$apt_log" 2>&1 ||
	    ! apt_get install -y -q --no-install-recommends $missing \
		>>"$apt_log" 2>&1; then
		cat "$apt_log" >&2
		rm -f "$apt_log"
		die "could not install:$missing"
	fi
	rm -f "$apt_log"
	touch "$VMMCI_CACHE/.apt-updated"
}

# supported_host: die, in one line, on a machine the scripts do not
# support (not Debian 12 or 13, or neither root nor sudo), before
# anything is fetched or built.
supported_host() {
	rel=$(. /etc/os-release 2>/dev/null &&
		[ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}") || rel=
	supported="supported: Debian 12 (bookworm) or 13 (trixie), as root or with sudo"
	case " $DEBIAN_RELEASES " in
	*" ${rel:-none} "*) ;;
	*)
		die "unsupported host ($(. /etc/os-release 2>/dev/null &&
			echo "${PRETTY_NAME:-}" || uname -s)); $supported"
		;;
	esac
	[ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null ||
		{ [ -t 0 ] && sudo -v; } ||
		die "unsupported host (neither root nor sudo); $supported"
}

# Debian's mirror as the machine's own apt sources name it.
debian_uri() {
	grep -hoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
		/etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
		awk '{print $2}' | head -n1
}

# Packages needed to build a kernel tree and run its static checkers.
KBUILD_PKGS="build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils
	kmod rsync sparse python3 python3-ply python3-git git perl"

# tree_dir BASE: where get-tree keeps the git tree for BASE.
tree_dir() {
	echo "$VMMCI_CACHE/trees/linux-$1"
}

# debian_base BASE: true if BASE is a Debian tree from the machine's apt
# sources (the default one or a backport base), not the upstream base.
debian_base() {
	case " $DEFAULT_BASE $BACKPORT_BASES " in
	*" $1 "*) return 0 ;;
	esac
	return 1
}

# series_dir VERSION: the series for a kernel VERSION (e.g. 6.12.117):
# patches/ is written against the upstream base, patches/6.12/ is the
# same series rebased by scripts/regen onto Debian's 6.12, and so on for
# each of BACKPORT_BASES.
series_dir() {
	for b in $DEFAULT_BASE $BACKPORT_BASES; do
		case "$1" in
		"$b"|"$b".*) echo "$TOP/patches/$b"; return 0 ;;
		esac
	done
	echo "$TOP/patches"
}

# Packages the tests need on top of KBUILD_PKGS.
TEST_PKGS="b4 quilt busybox-static e2fsprogs python3-docutils"
