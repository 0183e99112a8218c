// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit tests for the vmmci driver: what it reads from and writes to the
 * device for each value of COMMAND, and what it then does; at start, at
 * power-off and for the PTP clock.
 *
 * The device is a fake virtio device whose config ops log every access;
 * the stop and the clock step are replaced by static stubs that log what
 * would have happened, in the same log.
 */

#include <kunit/static_stub.h>
#include <kunit/test.h>
#include <kunit/test-bug.h>
#include <linux/module.h>
#include <linux/ptp_clock_kernel.h>
#include <linux/reboot.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/time64.h>
#include <linux/timekeeping.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "virtio_vmmci.h"

/* COMMAND, then TIME_SEC and TIME_USEC as low and high dwords */
#define VMMCI_TEST_REGS		5
#define VMMCI_TEST_LOG_SIZE	32

enum vmmci_test_op {
	VMMCI_TEST_READ,
	VMMCI_TEST_WRITE,
	VMMCI_TEST_STOP,	/* vmmci_stop(), value: the command */
	VMMCI_TEST_STEP,	/* vmmci_set_clock(), value: the target in ns */
};

struct vmmci_test_event {
	enum vmmci_test_op op;
	unsigned int offset;
	unsigned int len;
	u64 value;
	s64 ns;			/* guest CLOCK_REALTIME, when logged */
};

struct vmmci_test_dev {
	struct virtio_device vdev;
	struct vmmci vi;
	u8 status;
	u32 regs[VMMCI_TEST_REGS];
	/* Seconds the host clock jumps by between two latching reads */
	u32 jump_sec;
	bool latched;
	/* A host clock that latches guest time plus this, not regs[] */
	bool live;
	s64 live_offset_ns;
	/* The driver queued its work item */
	bool queued;
	struct vmmci_test_event log[VMMCI_TEST_LOG_SIZE];
	unsigned int n;
};

static struct vmmci_test_dev *to_test_dev(struct virtio_device *vdev)
{
	return container_of(vdev, struct vmmci_test_dev, vdev);
}

static void vmmci_test_log(struct vmmci_test_dev *d, enum vmmci_test_op op,
			   unsigned int offset, unsigned int len, u64 value)
{
	if (d->n == ARRAY_SIZE(d->log)) {
		kunit_fail_current_test("more than %u events", d->n);
		return;
	}
	d->log[d->n++] = (struct vmmci_test_event){ op, offset, len, value,
						    ktime_get_real_ns() };
}

static void vmmci_test_set_host_time(struct vmmci_test_dev *d, u64 sec,
				     u64 usec)
{
	d->regs[1] = lower_32_bits(sec);
	d->regs[2] = upper_32_bits(sec);
	d->regs[3] = lower_32_bits(usec);
	d->regs[4] = upper_32_bits(usec);
}

/* As vmd: the host time at the latching read, in microseconds */
static void vmmci_test_latch_live(struct vmmci_test_dev *d)
{
	struct timespec64 ts;

	ts = ns_to_timespec64(ktime_get_real_ns() + d->live_offset_ns);
	vmmci_test_set_host_time(d, ts.tv_sec, ts.tv_nsec / NSEC_PER_USEC);
}

/* As vmd: anything but an aligned dword of a register reads as all ones */
static void vmmci_test_get(struct virtio_device *vdev, unsigned int offset,
			   void *buf, unsigned int len)
{
	struct vmmci_test_dev *d = to_test_dev(vdev);
	u32 val = U32_MAX;

	if (len == sizeof(u32) && offset == VMMCI_CONFIG_TIME_SEC) {
		if (d->live)
			vmmci_test_latch_live(d);
		if (d->latched)
			d->regs[1] += d->jump_sec;
		d->latched = true;
	}
	if (len == sizeof(u32) && offset % sizeof(u32) == 0 &&
	    offset / sizeof(u32) < VMMCI_TEST_REGS)
		val = d->regs[offset / sizeof(u32)];
	memset(buf, 0xff, len);
	memcpy(buf, &val, min_t(unsigned int, len, sizeof(val)));
	vmmci_test_log(d, VMMCI_TEST_READ, offset, len, val);
}

static void vmmci_test_set(struct virtio_device *vdev, unsigned int offset,
			   const void *buf, unsigned int len)
{
	u32 val = 0;

	memcpy(&val, buf, min_t(unsigned int, len, sizeof(val)));
	vmmci_test_log(to_test_dev(vdev), VMMCI_TEST_WRITE, offset, len, val);
}

static u8 vmmci_test_get_status(struct virtio_device *vdev)
{
	return to_test_dev(vdev)->status;
}

static void vmmci_test_set_status(struct virtio_device *vdev, u8 status)
{
	to_test_dev(vdev)->status = status;
}

/* vmmci has no queues */
static int vmmci_test_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
			       struct virtqueue *vqs[],
			       struct virtqueue_info vqs_info[],
			       struct irq_affinity *desc)
{
	return nvqs ? -EINVAL : 0;
}

static const struct virtio_config_ops vmmci_test_config_ops = {
	.get = vmmci_test_get,
	.set = vmmci_test_set,
	.get_status = vmmci_test_get_status,
	.set_status = vmmci_test_set_status,
	.find_vqs = vmmci_test_find_vqs,
};

/* virtio_has_feature() checks the bit against the driver's table */
static const unsigned int vmmci_test_features[] = {
	VMMCI_F_TIMESYNC, VMMCI_F_ACK, VMMCI_F_SYNCRTC,
};

static struct virtio_driver vmmci_test_driver = {
	.driver.name = "virtio_vmmci_test",
	.feature_table = vmmci_test_features,
	.feature_table_size = ARRAY_SIZE(vmmci_test_features),
};

/* In place of the stop and the step: log what would have been done */
static void vmmci_test_stop(struct vmmci *vi, u32 cmd)
{
	vmmci_test_log(to_test_dev(vi->vdev), VMMCI_TEST_STOP, 0, 0, cmd);
}

static int vmmci_test_set_clock(const struct timespec64 *ts)
{
	struct kunit *test = kunit_get_current_test();

	vmmci_test_log(test->priv, VMMCI_TEST_STEP, 0, 0,
		       timespec64_to_ns(ts));
	return 0;
}

/*
 * The stubs act in the test's task only: the work item notes that it
 * was queued, and the test runs the driver's handler itself.
 */
static void vmmci_test_queued(struct work_struct *work)
{
	container_of(work, struct vmmci_test_dev, vi.cmd_work)->queued = true;
}

static int vmmci_test_init(struct kunit *test)
{
	struct vmmci_test_dev *d;

	d = kunit_kzalloc(test, sizeof(*d), GFP_KERNEL);
	if (!d)
		return -ENOMEM;

	d->vdev.config = &vmmci_test_config_ops;
	d->vdev.dev.driver = &vmmci_test_driver.driver;
	d->vdev.dev.init_name = "vmmci-test";
	d->vdev.features = BIT_ULL(VMMCI_F_TIMESYNC) | BIT_ULL(VMMCI_F_ACK) |
			   BIT_ULL(VMMCI_F_SYNCRTC);
	d->vi.vdev = &d->vdev;
	d->vi.ready = true;
	mutex_init(&d->vi.lock);
	test->priv = d;

	kunit_activate_static_stub(test, vmmci_stop, vmmci_test_stop);
	kunit_activate_static_stub(test, vmmci_set_clock, vmmci_test_set_clock);
	INIT_WORK(&d->vi.cmd_work, vmmci_test_queued);
	return 0;
}

/* The host raises cmd; the driver's work item handles it */
static void vmmci_test_raise(struct vmmci_test_dev *d, u32 cmd)
{
	d->n = 0;
	d->regs[0] = cmd;
	vmmci_cmd_work(&d->vi.cmd_work);
}

#define RD(offset)	{ VMMCI_TEST_READ, offset, 4 }
#define WR(offset, val)	{ VMMCI_TEST_WRITE, offset, 4, val }
#define DID_STOP(cmd)	{ VMMCI_TEST_STOP, 0, 0, cmd }
#define DID_STEP	{ VMMCI_TEST_STEP }

/* An event as text; read values and step targets are left out */
static void vmmci_test_show(char *buf, size_t size,
			    const struct vmmci_test_event *e)
{
	switch (e->op) {
	case VMMCI_TEST_READ:
		snprintf(buf, size, "read %u bytes at %u", e->len, e->offset);
		break;
	case VMMCI_TEST_WRITE:
		snprintf(buf, size, "write %u bytes at %u: %llu", e->len,
			 e->offset, e->value);
		break;
	case VMMCI_TEST_STOP:
		snprintf(buf, size, "stop for command %llu", e->value);
		break;
	case VMMCI_TEST_STEP:
		snprintf(buf, size, "clock step");
		break;
	}
}

/* The log holds exactly the events expected, in the same order */
static void vmmci_test_expect_log(struct kunit *test,
				  const struct vmmci_test_event *want,
				  unsigned int n)
{
	struct vmmci_test_dev *d = test->priv;
	char got_text[48], want_text[48];
	unsigned int i;

	for (i = 0; i < min(n, d->n); i++) {
		vmmci_test_show(got_text, sizeof(got_text), &d->log[i]);
		vmmci_test_show(want_text, sizeof(want_text), &want[i]);
		KUNIT_EXPECT_STREQ_MSG(test, got_text, want_text, "event %u", i);
		if (strcmp(got_text, want_text))
			return;
	}
	if (d->n > n) {
		vmmci_test_show(got_text, sizeof(got_text), &d->log[n]);
		KUNIT_FAIL(test, "event %u not expected: %s", n, got_text);
	} else if (d->n < n) {
		vmmci_test_show(want_text, sizeof(want_text), &want[d->n]);
		KUNIT_FAIL(test, "event %u missing: %s", d->n, want_text);
	}
}

#define EXPECT_LOG(test, ...) do {					\
	static const struct vmmci_test_event want[] = { __VA_ARGS__ };	\
	vmmci_test_expect_log(test, want, ARRAY_SIZE(want));		\
} while (0)

/* vmd kills a guest that has not acked a stop within 3 s: ack, then stop */
static void vmmci_test_stop_acked_first(struct kunit *test)
{
	struct vmmci_test_dev *d = test->priv;

	vmmci_test_raise(d, VMMCI_REBOOT);
	EXPECT_LOG(test, RD(0), WR(0, VMMCI_REBOOT), DID_STOP(VMMCI_REBOOT));

	/* A new device */
	d->vi.cmd = (struct vmmci_cmd_state){};
	vmmci_test_raise(d, VMMCI_SHUTDOWN);
	EXPECT_LOG(test, RD(0), WR(0, VMMCI_SHUTDOWN), DID_STOP(VMMCI_SHUTDOWN));
}

/* One stop: the acked request left in place, or another one, starts none */
static void vmmci_test_stop_once(struct kunit *test)
{
	struct vmmci_test_dev *d = test->priv;

	vmmci_test_raise(d, VMMCI_REBOOT);
	vmmci_test_raise(d, VMMCI_REBOOT);
	EXPECT_LOG(test, RD(0));
	vmmci_test_raise(d, VMMCI_SHUTDOWN);
	EXPECT_LOG(test, RD(0), WR(0, VMMCI_SHUTDOWN));
}

/*
 * SYNCRTC: ack, then two readings of the host clock, then the step.  vmd
 * clears SYNCRTC when acked, so the same value again is a new request.
 */
static void vmmci_test_sync_acked_first(struct kunit *test)
{
	struct vmmci_test_dev *d = test->priv;
	struct timespec64 now;
	unsigned int i;

	ktime_get_real_ts64(&now);
	vmmci_test_set_host_time(d, now.tv_sec + 90,
				 now.tv_nsec / NSEC_PER_USEC);
	for (i = 1; i <= 2; i++) {
		vmmci_test_raise(d, VMMCI_SYNCRTC);
		EXPECT_LOG(test, RD(0), WR(0, VMMCI_SYNCRTC),
			   RD(4), RD(8), RD(12), RD(16),	/* first reading */
			   RD(4), RD(8), RD(12), RD(16),	/* second reading */
			   DID_STEP);
	}
}

/*
 * The step goes to host time, which vmd gives with 32-bit seconds: the
 * last of them, in 2106, must neither overflow nor be refused.
 */
static void vmmci_test_step_to_host_time(struct kunit *test)
{
	static const u64 secs[] = { 1700000000, U32_MAX };
	struct vmmci_test_dev *d = test->priv;
	unsigned int i;
	s64 host_ns;

	for (i = 0; i < ARRAY_SIZE(secs); i++) {
		vmmci_test_set_host_time(d, secs[i], 999999);
		vmmci_test_raise(d, VMMCI_SYNCRTC);
		KUNIT_ASSERT_EQ(test, d->n, 11);
		KUNIT_ASSERT_EQ(test, d->log[10].op, VMMCI_TEST_STEP);

		/*
		 * The middle of the host's microsecond, plus the guest time
		 * from the reading to the step
		 */
		host_ns = secs[i] * NSEC_PER_SEC + 999999500;
		KUNIT_EXPECT_GE(test, (s64)d->log[10].value, host_ns);
		KUNIT_EXPECT_LT(test, (s64)d->log[10].value,
				host_ns + NSEC_PER_SEC);
	}
}

/*
 * A host clock the guest is already within a reading's precision of is
 * not stepped to, as the step would only add its own error; one a
 * millisecond away is.
 */
static void vmmci_test_no_step_within_bound(struct kunit *test)
{
	struct vmmci_test_dev *d = test->priv;

	d->live = true;
	vmmci_test_raise(d, VMMCI_SYNCRTC);
	EXPECT_LOG(test, RD(0), WR(0, VMMCI_SYNCRTC),
		   RD(4), RD(8), RD(12), RD(16),	/* first reading */
		   RD(4), RD(8), RD(12), RD(16));	/* second reading */

	d->live_offset_ns = NSEC_PER_MSEC;
	vmmci_test_raise(d, VMMCI_SYNCRTC);
	EXPECT_LOG(test, RD(0), WR(0, VMMCI_SYNCRTC),
		   RD(4), RD(8), RD(12), RD(16),
		   RD(4), RD(8), RD(12), RD(16),
		   DID_STEP);
}

/* Once stopping, SYNCRTC is acked (vmd waits for it) but the clock kept */
static void vmmci_test_no_step_while_stopping(struct kunit *test)
{
	struct vmmci_test_dev *d = test->priv;

	vmmci_test_set_host_time(d, 1700000000, 0);
	vmmci_test_raise(d, VMMCI_SHUTDOWN);
	vmmci_test_raise(d, VMMCI_SYNCRTC);
	EXPECT_LOG(test, RD(0), WR(0, VMMCI_SYNCRTC));
}

/* A stop the host asked for before the driver started is not lost */
static void vmmci_test_cmd_pending_at_start(struct kunit *test)
{
	struct vmmci_test_dev *d = test->priv;

	d->vi.ready = false;
	d->regs[0] = VMMCI_REBOOT;
	KUNIT_ASSERT_EQ(test, vmmci_start(&d->vi), 0);
	flush_work(&d->vi.cmd_work);
	KUNIT_EXPECT_TRUE(test, d->queued);
	KUNIT_EXPECT_TRUE(test, d->status & VIRTIO_CONFIG_S_DRIVER_OK);

	vmmci_cmd_work(&d->vi.cmd_work);
	EXPECT_LOG(test, RD(0), WR(0, VMMCI_REBOOT), DID_STOP(VMMCI_REBOOT));
}

/* Nothing is acked, read or done for a value the driver does not know */
static void vmmci_test_unknown_not_acked(struct kunit *test)
{
	static const u32 values[] = { 4, 42, U32_MAX };
	struct vmmci_test_dev *d = test->priv;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(values); i++) {
		vmmci_test_raise(d, values[i]);
		EXPECT_LOG(test, RD(0));
	}
	KUNIT_EXPECT_FALSE(test, d->vi.cmd.stopping);
}

/*
 * A host time that is no time is not stepped to: the first reading
 * already tells, and the rest is not read.
 */
static void vmmci_test_invalid_time_no_step(struct kunit *test)
{
	static const struct {
		u64 sec, usec;
	} bad[] = {
		{ 1700000000, USEC_PER_SEC },	/* a second of microseconds */
		{ 1700000000, BIT_ULL(32) },	/* high dword of usec */
		{ 0, 0 },			/* no time at all */
		{ 1483228799, 0 },		/* before vmmci existed (2017) */
		{ BIT_ULL(32), 0 },		/* high dword of sec */
	};
	struct vmmci_test_dev *d = test->priv;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		vmmci_test_set_host_time(d, bad[i].sec, bad[i].usec);
		vmmci_test_raise(d, VMMCI_SYNCRTC);
		EXPECT_LOG(test, RD(0), WR(0, VMMCI_SYNCRTC),
			   RD(4), RD(8), RD(12), RD(16));
	}
}

/*
 * Two readings that disagree, the host clock a second further on after
 * a few microseconds of guest time, are not stepped to either.
 */
static void vmmci_test_inconsistent_time_no_step(struct kunit *test)
{
	struct vmmci_test_dev *d = test->priv;

	vmmci_test_set_host_time(d, 1700000000, 0);
	d->jump_sec = 1;
	vmmci_test_raise(d, VMMCI_SYNCRTC);
	EXPECT_LOG(test, RD(0), WR(0, VMMCI_SYNCRTC),
		   RD(4), RD(8), RD(12), RD(16),	/* first reading */
		   RD(4), RD(8), RD(12), RD(16));	/* second reading */
}

/* vmd ends the VM 3 s after SHUTDOWN, if it acks commands at all */
static void vmmci_test_power_off_notice(struct kunit *test)
{
	struct vmmci_test_dev *d = test->priv;
	struct sys_off_data data = { .cb_data = &d->vi };

	KUNIT_EXPECT_EQ(test, vmmci_power_off_prepare(&data), NOTIFY_DONE);
	EXPECT_LOG(test, WR(0, VMMCI_SHUTDOWN));

	d->n = 0;
	d->vdev.features &= ~BIT_ULL(VMMCI_F_ACK);
	KUNIT_EXPECT_EQ(test, vmmci_power_off_prepare(&data), NOTIFY_DONE);
	KUNIT_EXPECT_EQ(test, d->n, 0);
}

/* The guest times the driver takes around the latching read */
static void vmmci_test_sts_init(struct ptp_system_timestamp *sts)
{
	*sts = (struct ptp_system_timestamp){ .clockid = CLOCK_REALTIME };
}

static void vmmci_test_sts_ns(const struct ptp_system_timestamp *sts,
			      s64 *pre, s64 *post)
{
	*pre = ktime_to_ns(sts->pre_sts.systime);
	*post = ktime_to_ns(sts->post_sts.systime);
}

/*
 * The PTP clock's system timestamps bracket the latching read and no
 * other, and its time is the middle of the host's microsecond.
 */
static void vmmci_test_ptp_bracket(struct kunit *test)
{
	struct vmmci_test_dev *d = test->priv;
	struct ptp_system_timestamp sts;
	struct timespec64 ts;
	s64 pre, post;

	vmmci_test_set_host_time(d, 1700000000, 123456);
	vmmci_test_sts_init(&sts);
	KUNIT_ASSERT_EQ(test, vmmci_ptp_gettimex(&d->vi.ptp_info, &ts, &sts),
			0);
	EXPECT_LOG(test, RD(4), RD(8), RD(12), RD(16));
	KUNIT_ASSERT_EQ(test, d->n, 4);

	vmmci_test_sts_ns(&sts, &pre, &post);
	KUNIT_EXPECT_LE(test, pre, d->log[0].ns);
	KUNIT_EXPECT_LE(test, d->log[0].ns, post);
	KUNIT_EXPECT_LE(test, post, d->log[1].ns);
	KUNIT_EXPECT_EQ(test, timespec64_to_ns(&ts),
			1700000000LL * NSEC_PER_SEC + 123456500);
}

static struct kunit_case vmmci_test_cases[] = {
	KUNIT_CASE(vmmci_test_stop_acked_first),
	KUNIT_CASE(vmmci_test_stop_once),
	KUNIT_CASE(vmmci_test_sync_acked_first),
	KUNIT_CASE(vmmci_test_step_to_host_time),
	KUNIT_CASE(vmmci_test_no_step_within_bound),
	KUNIT_CASE(vmmci_test_no_step_while_stopping),
	KUNIT_CASE(vmmci_test_cmd_pending_at_start),
	KUNIT_CASE(vmmci_test_unknown_not_acked),
	KUNIT_CASE(vmmci_test_invalid_time_no_step),
	KUNIT_CASE(vmmci_test_inconsistent_time_no_step),
	KUNIT_CASE(vmmci_test_power_off_notice),
	KUNIT_CASE(vmmci_test_ptp_bracket),
	{}
};

static struct kunit_suite vmmci_test_suite = {
	.name = "virtio_vmmci",
	.init = vmmci_test_init,
	.test_cases = vmmci_test_cases,
};

kunit_test_suite(vmmci_test_suite);

MODULE_DESCRIPTION("KUnit tests for the vmd VMM control interface driver");
MODULE_LICENSE("GPL");
MODULE_IMPORT_NS("EXPORTED_FOR_KUNIT_TESTING");
