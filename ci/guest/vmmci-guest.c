// SPDX-License-Identifier: GPL-2.0
/*
 * Small helper for the test guest, whose busybox "date" has no
 * nanoseconds.  Built static and put into the initramfs.
 *
 *   vmmci-guest now          print CLOCK_REALTIME as SECONDS.NANOSECONDS
 *   vmmci-guest sleep-ms N   sleep N milliseconds
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int usage(void)
{
	fprintf(stderr, "usage: vmmci-guest now | sleep-ms N\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct timespec ts;

	if (argc == 2 && !strcmp(argv[1], "now")) {
		clock_gettime(CLOCK_REALTIME, &ts);
		printf("%lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "sleep-ms")) {
		long ms = strtol(argv[2], NULL, 10);

		ts.tv_sec = ms / 1000;
		ts.tv_nsec = (ms % 1000) * 1000000L;
		return nanosleep(&ts, NULL) ? 1 : 0;
	}
	return usage();
}
