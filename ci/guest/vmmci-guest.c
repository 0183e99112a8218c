// SPDX-License-Identifier: GPL-2.0
/*
 * Helper for the test guest, whose busybox has no nanosecond clock and no
 * port I/O.  Built static and put into the initramfs.
 *
 *   vmmci-guest now            print CLOCK_REALTIME as SECONDS.NANOSECONDS
 *   vmmci-guest now-loop N     print "now-loop ready", then for each of N
 *                              lines read, CLOCK_REALTIME as
 *                              "T SECONDS.NANOSECONDS": the host times
 *                              the round trip with no fork or exec in it
 *   vmmci-guest set-offset NS  move CLOCK_REALTIME by NS nanoseconds
 *   vmmci-guest watch-sets     print "armed", then "set N" each time
 *                              CLOCK_REALTIME is set (by anyone: a timerfd
 *                              with TFD_TIMER_CANCEL_ON_SET sees it, not
 *                              the driver), N counting from 1; runs until
 *                              killed.  Sets closer together than it
 *                              wakes up count once.
 *   vmmci-guest probe [N]      guest minus host time, read from the vmmci
 *                              device's registers (not through its driver),
 *                              best of N samples: "OFFSET_NS BOUND_NS"
 *   vmmci-guest drift-read N K read drift_ns (the driver measures it then)
 *                              N times, a second apart, and print each with
 *                              a probe: "DRIFT_NS OFFSET_NS BOUND_NS";
 *                              with the time probe, K samples of it right
 *                              after each read of drift_ns
 *   vmmci-guest ref N          N samples of the model's test-only time
 *                              probe (time-probe=on): writes CLOCK_REALTIME
 *                              before and after the write the model stamps
 *                              with its host clock; the host reads them
 *   vmmci-guest narrow-read OFF  a 16-bit read of BAR0 + OFF, which vmd does
 *                              not decode for its config space: the
 *                              negative control of the e2e check that the
 *                              driver makes no such access
 *   vmmci-guest phc-read DEV N read the PTP clock DEV N times with
 *                              clock_gettime(): "NS_PER_READ OFFSET_NS
 *                              BOUND_NS", the mean cost of a read, and the
 *                              PTP clock minus CLOCK_REALTIME of the
 *                              fastest read with its error bound
 *
 * The probe brackets the read of TIME_SEC at BAR0 + 24, which latches the
 * host clock, by two CLOCK_REALTIME reads, then reads TIME_USEC at + 32:
 * the host sample lies within the bracket, so the offset's error is at
 * most half the bracket plus half a microsecond of host resolution.
 */

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define NSEC_PER_SEC	1000000000LL
#define VMMCI_TIME_SEC	24
#define VMMCI_TIME_USEC	32

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return 0;
}

/* The I/O port base of BAR n of the vmmci device (PCI 0b5d:0777) */
static unsigned long find_bar_n(int n)
{
	const char *dir = "/sys/bus/pci/devices";
	char path[512], buf[256];
	unsigned long start = 0;
	struct dirent *de;
	DIR *d = opendir(dir);

	while (d && (de = readdir(d))) {
		snprintf(path, sizeof(path), "%s/%s/vendor", dir, de->d_name);
		if (read_file(path, buf, sizeof(buf)) || strncmp(buf, "0x0b5d", 6))
			continue;
		snprintf(path, sizeof(path), "%s/%s/resource", dir, de->d_name);
		if (!read_file(path, buf, sizeof(buf))) {
			char *line = buf;

			/* One line per resource: "start end flags" */
			for (int i = 0; i < n && line; i++) {
				line = strchr(line, '\n');
				if (line)
					line++;
			}
			if (line)
				start = strtoul(line, NULL, 16);
		}
		break;
	}
	if (d)
		closedir(d);
	return start;
}

static unsigned long find_bar(void)
{
	return find_bar_n(0);
}

/*
 * The model's test-only time probe (-device vmmci,time-probe=on), BAR1:
 * write t1 = CLOCK_REALTIME, which the model stamps with its host clock,
 * then t2, read after that write; the host reads the samples over QMP.
 */
static unsigned long open_time_probe(void)
{
	unsigned long bar = find_bar_n(1);

	return bar && !ioperm(bar, 16, 1) ? bar : 0;
}

static void time_probe_sample(unsigned long bar)
{
	int64_t t1, t2;

	t1 = now_ns();
	outl((uint32_t)t1, bar);
	outl((uint32_t)((uint64_t)t1 >> 32), bar + 4);
	t2 = now_ns();
	outl((uint32_t)t2, bar + 8);
	outl((uint32_t)((uint64_t)t2 >> 32), bar + 12);
}

static int cmd_ref(int n)
{
	unsigned long bar = open_time_probe();

	if (!bar) {
		fprintf(stderr, "vmmci-guest: no time probe\n");
		return 1;
	}
	for (int i = 0; i < n; i++)
		time_probe_sample(bar);
	return 0;
}

/* Best (narrowest bracket) of n samples of guest minus host time */
static int probe(unsigned long bar, int n, int64_t *offset, int64_t *bound)
{
	int64_t t0, t1, host, width, best = -1;
	uint32_t sec, usec;

	for (int i = 0; i < n; i++) {
		t0 = now_ns();
		sec = inl(bar + VMMCI_TIME_SEC);	/* latches the host time */
		t1 = now_ns();
		usec = inl(bar + VMMCI_TIME_USEC);
		if (usec >= 1000000)
			continue;
		host = sec * NSEC_PER_SEC + usec * 1000LL + 500;
		width = t1 - t0;
		if (best < 0 || width < best) {
			best = width;
			*offset = t0 + width / 2 - host;
			*bound = width / 2 + 500;
		}
	}
	return best < 0 ? -1 : 0;
}

static unsigned long open_device(void)
{
	unsigned long bar = find_bar();

	if (!bar) {
		fprintf(stderr, "vmmci-guest: no vmmci device\n");
		exit(1);
	}
	if (ioperm(bar, 40, 1)) {
		perror("vmmci-guest: ioperm");
		exit(1);
	}
	return bar;
}

static int cmd_now_loop(int n)
{
	char line[16];

	printf("now-loop ready\n");
	fflush(stdout);
	for (int i = 0; i < n && fgets(line, sizeof(line), stdin); i++) {
		int64_t t = now_ns();

		printf("T %lld.%09lld\n", (long long)(t / NSEC_PER_SEC),
		       (long long)(t % NSEC_PER_SEC));
		fflush(stdout);
	}
	return 0;
}

static int cmd_narrow_read(unsigned int off)
{
	unsigned long bar = open_device();

	printf("0x%x\n", inw(bar + off));
	return 0;
}

static int cmd_probe(int n)
{
	unsigned long bar = open_device();
	int64_t offset, bound;

	if (probe(bar, n, &offset, &bound))
		return 1;
	printf("%lld %lld\n", (long long)offset, (long long)bound);
	return 0;
}

/* The sysfs directory of the device bound to virtio_vmmci */
static int drift_dir(char *path, size_t len)
{
	const char *dir = "/sys/bus/virtio/drivers/virtio_vmmci";
	struct dirent *de;
	DIR *d = opendir(dir);
	int ret = -1;

	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, "virtio", 6))
			continue;
		snprintf(path, len, "%s/%s", dir, de->d_name);
		ret = 0;
		break;
	}
	if (d)
		closedir(d);
	return ret;
}

static int cmd_drift_read(int n, int k)
{
	unsigned long bar = open_device(), ref = open_time_probe();
	char dir[300], path[400], buf[64];
	int64_t offset, bound;

	if (drift_dir(dir, sizeof(dir))) {
		fprintf(stderr, "vmmci-guest: driver not bound\n");
		return 1;
	}
	for (int i = 0; i < n; i++) {
		if (i)
			sleep(1);
		snprintf(path, sizeof(path), "%s/drift_ns", dir);
		if (read_file(path, buf, sizeof(buf)))
			continue;	/* ENODATA: no valid measurement */
		/* a skewed host clock moves the truth while we wait */
		for (int j = 0; ref && j < k; j++)
			time_probe_sample(ref);
		if (probe(bar, 5, &offset, &bound)) {
			fprintf(stderr, "vmmci-guest: no valid probe\n");
			return 1;
		}
		printf("%lld %lld %lld\n", atoll(buf), (long long)offset,
		       (long long)bound);
		fflush(stdout);
	}
	return 0;
}

/* The dynamic clock id of an open PTP character device */
static clockid_t fd_to_clockid(int fd)
{
	return (clockid_t)((~(unsigned int)fd << 3) | 3);
}

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts))
		return -1;
	return ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

static int cmd_phc_read(const char *dev, int n)
{
	int64_t start, t0, t1, phc, width, best = -1, offset = 0;
	int fd = open(dev, O_RDONLY);
	clockid_t id;

	if (fd < 0 || n < 1) {
		perror("vmmci-guest: open");
		return 1;
	}
	id = fd_to_clockid(fd);
	start = clock_ns(CLOCK_MONOTONIC);
	for (int i = 0; i < n; i++) {
		t0 = now_ns();
		phc = clock_ns(id);
		t1 = now_ns();
		if (phc < 0) {
			perror("vmmci-guest: clock_gettime");
			return 1;
		}
		width = t1 - t0;
		if (best < 0 || width < best) {
			best = width;
			offset = phc - (t0 + width / 2);
		}
	}
	printf("%lld %lld %lld\n",
	       (long long)((clock_ns(CLOCK_MONOTONIC) - start) / n),
	       (long long)offset, (long long)(best / 2));
	close(fd);
	return 0;
}

static int cmd_set_offset(long long delta)
{
	int64_t t = now_ns() + delta;
	struct timespec ts = { t / NSEC_PER_SEC, t % NSEC_PER_SEC };

	if (clock_settime(CLOCK_REALTIME, &ts)) {
		perror("vmmci-guest: clock_settime");
		return 1;
	}
	return 0;
}

static int cmd_watch_sets(void)
{
	/* A timer that never expires: only a set of the clock ends a read */
	struct itimerspec never = {
		.it_value = { .tv_sec = now_ns() / NSEC_PER_SEC + 100LL * 365 * 86400 },
	};
	unsigned long n = 0;
	uint64_t ticks;
	int fd;

	fd = timerfd_create(CLOCK_REALTIME, 0);
	if (fd < 0) {
		perror("vmmci-guest: timerfd_create");
		return 1;
	}
	for (;;) {
		if (timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET,
				    &never, NULL)) {
			/* set again while it was being armed */
			if (errno == ECANCELED) {
				n++;
				continue;
			}
			perror("vmmci-guest: timerfd_settime");
			return 1;
		}
		if (!n)
			printf("armed\n");
		else
			printf("set %lu\n", n);
		fflush(stdout);
		if (read(fd, &ticks, sizeof(ticks)) >= 0 || errno != ECANCELED) {
			perror("vmmci-guest: timerfd read");
			return 1;
		}
		n++;
	}
}

static int usage(void)
{
	fprintf(stderr, "usage: vmmci-guest now | now-loop N | set-offset NS | "
		"watch-sets | probe [N] | ref N | drift-read N K | narrow-read OFF | "
		"phc-read DEV N\n");
	return 2;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "now")) {
		int64_t t = now_ns();

		printf("%lld.%09lld\n", (long long)(t / NSEC_PER_SEC),
		       (long long)(t % NSEC_PER_SEC));
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "now-loop"))
		return cmd_now_loop(atoi(argv[2]));
	if (argc == 3 && !strcmp(argv[1], "set-offset"))
		return cmd_set_offset(atoll(argv[2]));
	if (argc == 2 && !strcmp(argv[1], "watch-sets"))
		return cmd_watch_sets();
	if ((argc == 2 || argc == 3) && !strcmp(argv[1], "probe"))
		return cmd_probe(argc == 3 ? atoi(argv[2]) : 20);
	if (argc == 3 && !strcmp(argv[1], "ref"))
		return cmd_ref(atoi(argv[2]));
	if (argc == 3 && !strcmp(argv[1], "narrow-read"))
		return cmd_narrow_read(strtoul(argv[2], NULL, 0));
	if (argc == 4 && !strcmp(argv[1], "drift-read"))
		return cmd_drift_read(atoi(argv[2]), atoi(argv[3]));
	if (argc == 4 && !strcmp(argv[1], "phc-read"))
		return cmd_phc_read(argv[2], atoi(argv[3]));
	return usage();
}
