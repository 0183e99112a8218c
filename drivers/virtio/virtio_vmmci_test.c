// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit tests for the logic of the vmmci driver that needs no device:
 * decoding and checking the host time, making a sample of two readings,
 * drift and clock step arithmetic, and the command state machine.
 *
 * Included by virtio_vmmci.c.
 */

#include <kunit/test.h>

#define SEC(s)	((s64)(s) * NSEC_PER_SEC)

/* A time in 2023, well inside the plausible range */
#define T0	1700000000LL

static void vmmci_test_host_time_valid(struct kunit *test)
{
	s64 ns;

	KUNIT_ASSERT_EQ(test, vmmci_host_time_ns(T0, 123456, &ns), 0);
	/* The middle of the microsecond the host truncated to */
	KUNIT_EXPECT_EQ(test, ns, SEC(T0) + 123456500);

	KUNIT_ASSERT_EQ(test, vmmci_host_time_ns(VMMCI_HOST_SEC_MIN, 0, &ns),
			0);
	KUNIT_EXPECT_EQ(test, ns, SEC(VMMCI_HOST_SEC_MIN) + 500);

	/* The last second vmd's 32 bits can hold, in 2106: no overflow */
	KUNIT_ASSERT_EQ(test, vmmci_host_time_ns(U32_MAX, 999999, &ns), 0);
	KUNIT_EXPECT_EQ(test, ns, SEC(U32_MAX) + 999999500);
	KUNIT_EXPECT_GT(test, ns, 0);
}

static void vmmci_test_host_time_invalid(struct kunit *test)
{
	static const struct {
		u64 sec, usec;
	} bad[] = {
		{ T0, USEC_PER_SEC },		/* a second of microseconds */
		{ T0, U64_MAX },
		{ 0, 0 },			/* no time at all */
		{ 0, 999999 },
		{ VMMCI_HOST_SEC_MIN - 1, 0 },	/* before vmmci existed */
		{ 1000, 0 },			/* 1970 */
		{ (u64)U32_MAX + 1, 0 },	/* high dword set */
		{ U64_MAX, 999999 },		/* would overflow s64 ns */
		{ U64_MAX, U64_MAX },
	};
	unsigned int i;
	s64 ns;

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		ns = 42;
		KUNIT_EXPECT_EQ_MSG(test, vmmci_host_time_ns(bad[i].sec,
							     bad[i].usec, &ns),
				    -ERANGE, "%llu s %llu us", bad[i].sec,
				    bad[i].usec);
		KUNIT_EXPECT_EQ_MSG(test, ns, 42, "result written for #%u", i);
	}
}

/* Two readings 2 us apart on the guest clock, each bracket 1 us wide */
static void vmmci_test_readings(struct vmmci_reading *first,
				struct vmmci_reading *second,
				s64 guest_ns, s64 host_ns)
{
	first->before_ns = guest_ns;
	first->after_ns = guest_ns + 1000;
	first->host_ns = host_ns + 500;
	second->before_ns = guest_ns + 2000;
	second->after_ns = guest_ns + 3000;
	second->host_ns = host_ns + 2500;
}

static void vmmci_test_sample_good(struct kunit *test)
{
	struct vmmci_reading a, b;
	struct vmmci_sample s;

	vmmci_test_readings(&a, &b, SEC(T0), SEC(T0) + 7);
	KUNIT_ASSERT_EQ(test, vmmci_make_sample(&a, &b, &s), 0);
	KUNIT_EXPECT_EQ(test, s.host_ns, b.host_ns);
	KUNIT_EXPECT_EQ(test, s.guest_ns, SEC(T0) + 2500);
	KUNIT_EXPECT_EQ(test, s.bracket_ns, 1000);

	/* A host a week ahead is consistent: only the difference counts */
	vmmci_test_readings(&a, &b, SEC(T0), SEC(T0 + 7 * 86400));
	KUNIT_EXPECT_EQ(test, vmmci_make_sample(&a, &b, &s), 0);

	/* A guest clock before 1970 (never set) is no obstacle either */
	vmmci_test_readings(&a, &b, 0, SEC(T0));
	KUNIT_EXPECT_EQ(test, vmmci_make_sample(&a, &b, &s), 0);
	KUNIT_EXPECT_EQ(test, s.guest_ns, 2500);

	/* An odd bracket: the midpoint rounds down */
	b.after_ns = b.before_ns + 1001;
	KUNIT_ASSERT_EQ(test, vmmci_make_sample(&a, &b, &s), 0);
	KUNIT_EXPECT_EQ(test, s.guest_ns, b.before_ns + 500);
	KUNIT_EXPECT_EQ(test, s.bracket_ns, 1001);
}

static void vmmci_test_sample_host_inconsistent(struct kunit *test)
{
	struct vmmci_reading a, b;
	struct vmmci_sample s;
	s64 span;

	/* The host clock went backwards between the readings */
	vmmci_test_readings(&a, &b, SEC(T0), SEC(T0));
	b.host_ns = a.host_ns - 1;
	KUNIT_EXPECT_EQ(test, vmmci_make_sample(&a, &b, &s), -ERANGE);

	/* Standing still is fine (the same microsecond) */
	b.host_ns = a.host_ns;
	KUNIT_EXPECT_EQ(test, vmmci_make_sample(&a, &b, &s), 0);

	/* Forwards by what the guest saw plus the slack, but not more */
	span = b.after_ns - a.before_ns;
	b.host_ns = a.host_ns + span + VMMCI_SAMPLE_SLACK_NS;
	KUNIT_EXPECT_EQ(test, vmmci_make_sample(&a, &b, &s), 0);
	b.host_ns++;
	KUNIT_EXPECT_EQ(test, vmmci_make_sample(&a, &b, &s), -ERANGE);

	/* A host that jumped a second forwards between two reads */
	b.host_ns = a.host_ns + NSEC_PER_SEC;
	KUNIT_EXPECT_EQ(test, vmmci_make_sample(&a, &b, &s), -ERANGE);
}

static void vmmci_test_sample_guest_stepped(struct kunit *test)
{
	struct vmmci_reading a, b;
	struct vmmci_sample s;

	/* Within the first reading */
	vmmci_test_readings(&a, &b, SEC(T0), SEC(T0));
	a.after_ns = a.before_ns - 1;
	KUNIT_EXPECT_EQ(test, vmmci_make_sample(&a, &b, &s), -EAGAIN);

	/* Between the readings */
	vmmci_test_readings(&a, &b, SEC(T0), SEC(T0));
	b.before_ns = a.after_ns - SEC(60);
	b.after_ns = b.before_ns + 1000;
	KUNIT_EXPECT_EQ(test, vmmci_make_sample(&a, &b, &s), -EAGAIN);

	/* Within the second: the bracket would be negative */
	vmmci_test_readings(&a, &b, SEC(T0), SEC(T0));
	b.after_ns = b.before_ns - 1;
	KUNIT_EXPECT_EQ(test, vmmci_make_sample(&a, &b, &s), -EAGAIN);
}

static void vmmci_test_drift(struct kunit *test)
{
	struct vmmci_sample s = {
		.host_ns = SEC(T0),
		.guest_ns = SEC(T0) + 1500,
		.bracket_ns = 1000,
	};
	u64 uncertainty;
	s64 drift;

	/* A guest ahead of the host drifts positive */
	vmmci_drift(&s, &drift, &uncertainty);
	KUNIT_EXPECT_EQ(test, drift, 1500);
	KUNIT_EXPECT_EQ(test, uncertainty, 500 + 500);

	s.guest_ns = SEC(T0) - SEC(3600);
	vmmci_drift(&s, &drift, &uncertainty);
	KUNIT_EXPECT_EQ(test, drift, -SEC(3600));

	/* An odd bracket: the midpoint may be off by half of it, rounded up */
	s.bracket_ns = 1001;
	vmmci_drift(&s, &drift, &uncertainty);
	KUNIT_EXPECT_EQ(test, uncertainty, 501 + 500);

	s.bracket_ns = 0;
	vmmci_drift(&s, &drift, &uncertainty);
	KUNIT_EXPECT_EQ(test, uncertainty, 500);
}

static void vmmci_test_drift_extremes(struct kunit *test)
{
	struct vmmci_sample s = { .bracket_ns = 0 };
	u64 uncertainty;
	s64 drift, host_max;

	/* No overflow at either end of what the driver can see */
	KUNIT_ASSERT_EQ(test, vmmci_host_time_ns(U32_MAX, 999999, &host_max),
			0);
	s.host_ns = host_max;
	s.guest_ns = 0;
	vmmci_drift(&s, &drift, &uncertainty);
	KUNIT_EXPECT_EQ(test, drift, -host_max);

	s.host_ns = SEC(VMMCI_HOST_SEC_MIN);
	s.guest_ns = KTIME_MAX;
	vmmci_drift(&s, &drift, &uncertainty);
	KUNIT_EXPECT_EQ(test, drift, KTIME_MAX - SEC(VMMCI_HOST_SEC_MIN));
	KUNIT_EXPECT_GT(test, drift, 0);
}

static void vmmci_test_step_target(struct kunit *test)
{
	struct timespec64 ts;

	KUNIT_ASSERT_EQ(test, vmmci_step_target(SEC(T0) + 250, SEC(90), &ts),
			0);
	KUNIT_EXPECT_EQ(test, ts.tv_sec, T0 + 90);
	KUNIT_EXPECT_EQ(test, ts.tv_nsec, 250);

	/* Backwards, across a second boundary */
	KUNIT_ASSERT_EQ(test, vmmci_step_target(SEC(T0) + 250, -500, &ts), 0);
	KUNIT_EXPECT_EQ(test, ts.tv_sec, T0 - 1);
	KUNIT_EXPECT_EQ(test, ts.tv_nsec, NSEC_PER_SEC - 250);

	/* Before 1970, or past what s64 holds: refused */
	KUNIT_EXPECT_EQ(test, vmmci_step_target(SEC(5), -SEC(10), &ts),
			-ERANGE);
	KUNIT_EXPECT_EQ(test, vmmci_step_target(S64_MAX - 10, 11, &ts),
			-ERANGE);
	KUNIT_EXPECT_EQ(test, vmmci_step_target(S64_MIN + 10, -11, &ts),
			-ERANGE);
}

static void vmmci_test_cmd_stop(struct kunit *test)
{
	struct vmmci_cmd_state st = {};

	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_NONE),
			VMMCI_ACT_NOTHING);
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_REBOOT),
			VMMCI_ACT_STOP);
	KUNIT_EXPECT_TRUE(test, st.stopping);
	KUNIT_EXPECT_EQ(test, st.last_request, VMMCI_REBOOT);

	/* vmd leaves an acked REBOOT in place: interrupts with no change */
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_REBOOT),
			VMMCI_ACT_NOTHING);
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_REBOOT),
			VMMCI_ACT_NOTHING);

	/* SHUTDOWN while rebooting: acked, not acted on */
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_SHUTDOWN),
			VMMCI_ACT_REPEAT_STOP);
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_REBOOT),
			VMMCI_ACT_REPEAT_STOP);
	KUNIT_EXPECT_EQ(test, st.last_request, VMMCI_REBOOT);

	/* No clock step while stopping */
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_SYNCRTC),
			VMMCI_ACT_SKIP_SYNC);
	KUNIT_EXPECT_TRUE(test, st.stopping);
}

static void vmmci_test_cmd_shutdown_then_reboot(struct kunit *test)
{
	struct vmmci_cmd_state st = {};

	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_SHUTDOWN),
			VMMCI_ACT_STOP);
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_REBOOT),
			VMMCI_ACT_REPEAT_STOP);
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_SHUTDOWN),
			VMMCI_ACT_REPEAT_STOP);
}

static void vmmci_test_cmd_syncrtc(struct kunit *test)
{
	struct vmmci_cmd_state st = {};
	unsigned int i;

	/* Each SYNCRTC is new: vmd clears it when acked */
	for (i = 0; i < 3; i++) {
		KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_SYNCRTC),
				VMMCI_ACT_SYNC);
		KUNIT_EXPECT_EQ(test, st.last_cmd, VMMCI_NONE);
		KUNIT_EXPECT_EQ(test, st.last_request, VMMCI_SYNCRTC);
		KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_NONE),
				VMMCI_ACT_NOTHING);
	}
	KUNIT_EXPECT_FALSE(test, st.stopping);

	/* A stop after clock syncs is still a stop */
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_SHUTDOWN),
			VMMCI_ACT_STOP);
}

static void vmmci_test_cmd_unknown(struct kunit *test)
{
	struct vmmci_cmd_state st = {};

	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, 7), VMMCI_ACT_UNKNOWN);
	KUNIT_EXPECT_EQ(test, st.last_request, 7);
	/* Left in place: logged once, not on every interrupt */
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, 7), VMMCI_ACT_NOTHING);
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, U32_MAX),
			VMMCI_ACT_UNKNOWN);
	KUNIT_EXPECT_FALSE(test, st.stopping);

	/* A real command after garbage is acted on */
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_SYNCRTC),
			VMMCI_ACT_SYNC);
	KUNIT_EXPECT_EQ(test, vmmci_next_action(&st, VMMCI_REBOOT),
			VMMCI_ACT_STOP);
}

/* A storm of mixed values: one stop at most, every SYNCRTC seen */
static void vmmci_test_cmd_storm(struct kunit *test)
{
	static const u32 pattern[] = {
		VMMCI_SYNCRTC, 42, VMMCI_NONE, VMMCI_SYNCRTC, VMMCI_SYNCRTC, 4,
	};
	unsigned int counts[VMMCI_ACT_UNKNOWN + 1] = {};
	struct vmmci_cmd_state st = {};
	unsigned int i;

	for (i = 0; i < 1000 * ARRAY_SIZE(pattern); i++)
		counts[vmmci_next_action(&st, pattern[i % ARRAY_SIZE(pattern)])]++;

	/* SYNCRTC, SYNCRTC, SYNCRTC, 42, 4 per round; nothing else */
	KUNIT_EXPECT_EQ(test, counts[VMMCI_ACT_SYNC], 3000);
	KUNIT_EXPECT_EQ(test, counts[VMMCI_ACT_UNKNOWN], 2000);
	KUNIT_EXPECT_EQ(test, counts[VMMCI_ACT_NOTHING], 1000);
	KUNIT_EXPECT_EQ(test, counts[VMMCI_ACT_STOP], 0);
	KUNIT_EXPECT_FALSE(test, st.stopping);

	for (i = 0; i < 1000; i++)
		counts[vmmci_next_action(&st, i % 2 ? VMMCI_REBOOT :
					 VMMCI_SHUTDOWN)]++;
	KUNIT_EXPECT_EQ(test, counts[VMMCI_ACT_STOP], 1);
	KUNIT_EXPECT_EQ(test, counts[VMMCI_ACT_REPEAT_STOP], 999);
}

static struct kunit_case vmmci_test_cases[] = {
	KUNIT_CASE(vmmci_test_host_time_valid),
	KUNIT_CASE(vmmci_test_host_time_invalid),
	KUNIT_CASE(vmmci_test_sample_good),
	KUNIT_CASE(vmmci_test_sample_host_inconsistent),
	KUNIT_CASE(vmmci_test_sample_guest_stepped),
	KUNIT_CASE(vmmci_test_drift),
	KUNIT_CASE(vmmci_test_drift_extremes),
	KUNIT_CASE(vmmci_test_step_target),
	KUNIT_CASE(vmmci_test_cmd_stop),
	KUNIT_CASE(vmmci_test_cmd_shutdown_then_reboot),
	KUNIT_CASE(vmmci_test_cmd_syncrtc),
	KUNIT_CASE(vmmci_test_cmd_unknown),
	KUNIT_CASE(vmmci_test_cmd_storm),
	{}
};

static struct kunit_suite vmmci_test_suite = {
	.name = "virtio_vmmci",
	.test_cases = vmmci_test_cases,
};
kunit_test_suite(vmmci_test_suite);
