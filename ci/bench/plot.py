#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Plot the benchmark's series (scripts/bench --plot runs this with
Debian's python3 and python3-matplotlib).

Usage: plot.py BENCH.json OUT.png
"""

import json
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt     # noqa: E402


def label_axes(ax, title, xlabel, linthresh=None):
    """Title, labels and grid for a plot of guest - host in ms; a symlog
    y axis if linthresh is given."""
    if linthresh:
        ax.set_yscale('symlog', linthresh=linthresh)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel('guest - host (ms%s)' % (', symlog' if linthresh else ''))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize='small')


def plot_suspend(suspend, axes):
    """|guest - host| after each host clock jump (the first repetition),
    one subplot per jump, one curve per setup."""
    labels = {'ntp': 'chrony, NTP to the host (no driver)',
              'driver': 'virtio_vmmci alone (SYNCRTC)',
              'driver+ntp': 'virtio_vmmci + chrony over NTP',
              'driver+phc': 'virtio_vmmci + chrony, refclock PHC'}
    jumps = sorted(suspend, key=int)
    for ax, jump in zip(axes, jumps):
        points = suspend[jump][0]['points']
        for setup, label in labels.items():
            pts = points.get(setup)
            if pts:
                ax.plot([p[0] for p in pts], [abs(p[1]) / 1e6 for p in pts],
                        '.-', label=label)
        ax.set_yscale('log')
        ax.set_title('After a host clock jump of +%s s (a suspend)' % jump)
        ax.set_xlabel('seconds after the jump')
        ax.set_ylabel('|guest - host| (ms, log)')
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize='small')
    for ax in axes[len(jumps):]:
        ax.set_visible(False)


def main():
    if len(sys.argv) != 3 or sys.argv[1] in ('-h', '--help'):
        print(__doc__)
        return 0 if len(sys.argv) == 2 else 2
    with open(sys.argv[1]) as f:
        data = json.load(f)
    series = data.get('series', {})
    long_run = series.get('long', {})
    suspend = series.get('suspend', {})
    rows = 2 if suspend else 1
    fig, axes = plt.subplots(rows, 3, figsize=(18, 4.5 * rows),
                             squeeze=False)
    ax1, ax2, ax3 = axes[0]
    if not long_run:
        ax3.set_visible(False)
    if suspend:
        plot_suspend(suspend, axes[1])

    pause = series.get('pause', {})
    for path, label, style in (('syncrtc', 'virtio_vmmci (SYNCRTC)', '-'),
                               ('rtc', 'RTC path (hwclock -s)', '--')):
        pts = pause.get(path)
        if pts:
            # (s, guest - host by the time probe[, by the registers])
            ax1.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], style,
                     marker='.', label=label)
    label_axes(ax1, 'Clock after a host suspend (8 s pause)',
               'host time (s); VM paused 8 s after t = 2 s', linthresh=1)

    drift = series.get('drift', {})
    for skew, pts in drift.items():
        if not pts:
            continue
        x = list(range(len(pts)))
        # (drift_ns, register probe, bound[, time probe, bound]): the
        # time probe is the truth where a run has it.  Results of the
        # driver before drift_uncertainty_ns was dropped have it after
        # the probe, and show it as error bars.
        old = all(len(p) in (4, 6) for p in pts)
        ref = 4 if old else 3
        truth = ref if all(len(p) > ref for p in pts) else 1
        ax2.plot(x, [p[truth] / 1e6 for p in pts], '-', label='truth (%s), %s'
                 % ('time probe' if truth == ref else 'registers', skew))
        ax2.errorbar(x, [p[0] / 1e6 for p in pts],
                     yerr=[p[2] / 1e6 for p in pts] if old else None,
                     fmt='.', label='drift_ns, %s' % skew)
    label_axes(ax2, 'sysfs drift_ns tracking an injected skew',
               'sample (1 s apart)')

    if long_run:
        for kind, label in (('chrony', 'chrony, refclock PHC (vmmci)'),
                            ('syncrtc-only', 'driver alone (SYNCRTC steps)')):
            pts = long_run.get(kind)
            if pts:
                ax3.plot([p[0] / 60 for p in pts], [p[1] / 1e6 for p in pts],
                         '.-', label=label)
        label_axes(ax3, 'Keeping in step between jumps',
                   'minutes; host clock +50 ms, 100 ppm fast', linthresh=0.1)

    m = data.get('machine', {})
    fig.suptitle('vmmci benchmark, %s, %s' % (m.get('date', ''),
                                                m.get('guest', '')),
                 fontsize='small')
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)
    return 0


if __name__ == '__main__':
    sys.exit(main())
