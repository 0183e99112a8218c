// SPDX-License-Identifier: GPL-2.0
/*
 * Print the host's TSC frequency in kHz.  Under TCG the guest's TSC runs
 * at the host's rate, and a guest booted with acpi=off has no HPET or PM
 * timer to calibrate it against: the harness passes this value with
 * tsc_early_khz= so that the guest's clock is the TSC, not 4 ms jiffies.
 */

#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(void)
{
	struct timespec pause = { 0, 200 * 1000000 };
	int64_t t0, t1;
	uint64_t c0, c1;

	t0 = now_ns();
	c0 = __rdtsc();
	nanosleep(&pause, NULL);
	t1 = now_ns();
	c1 = __rdtsc();
	printf("%llu\n", (unsigned long long)((c1 - c0) * 1000000 / (t1 - t0)));
	return 0;
}
