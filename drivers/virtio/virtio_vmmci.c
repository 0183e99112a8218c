// SPDX-License-Identifier: GPL-2.0
/*
 * Driver for the VMM control interface (vmmci) of OpenBSD's vmd(8): host
 * requests to stop and to step the clock, a power-off notice to the host,
 * the guest's clock offset in sysfs and the host clock as a PTP clock.
 */

// @series-if kunit
#include <kunit/static_stub.h>
#include <kunit/visibility.h>
// @series-endif
#include <linux/delay.h>
#include <linux/device.h>
#include <linux/irqflags.h>
#include <linux/math.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/ptp_clock_kernel.h>
#include <linux/reboot.h>
#include <linux/sysfs.h>
#include <linux/time64.h>
#include <linux/timekeeping.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/workqueue.h>

#include "virtio_vmmci.h"

/* vmd's private virtio device id (its PCI subsystem id) and vendor */
#define VIRTIO_ID_VMMCI		0xffff
#define VIRTIO_VENDOR_OPENBSD	0x0b5d

/* vmmci appeared in 2017; vmd's seconds are 32 bits */
#define VMMCI_HOST_SEC_MIN	1483228800LL	/* 2017-01-01T00:00:00Z */
#define VMMCI_HOST_SEC_MAX	((s64)U32_MAX)

/* Two truncations to microseconds, and host and guest rates apart */
#define VMMCI_SAMPLE_SLACK_NS	(200 * NSEC_PER_USEC)

/* vmd ends the VM 3 s after the power-off notice */
#define VMMCI_POWER_OFF_WAIT_MS	(4 * MSEC_PER_SEC)

enum vmmci_action {
	VMMCI_ACT_NOTHING,
	VMMCI_ACT_STOP,
	VMMCI_ACT_REPEAT_STOP,	/* ack only */
	VMMCI_ACT_SYNC,
	VMMCI_ACT_SKIP_SYNC,	/* ack only: stopping */
	VMMCI_ACT_UNKNOWN,	/* not acked */
};

/* A host clock reading, between two guest CLOCK_REALTIME reads */
struct vmmci_reading {
	s64 host_ns;
	s64 before_ns;
	s64 after_ns;
};

struct vmmci_sample {
	s64 host_ns;
	s64 guest_ns;		/* midpoint of the bracket */
	u64 bracket_ns;
};

/* The middle of the microsecond the host truncated its time to */
static int vmmci_host_time_ns(u64 sec, u64 usec, s64 *ns)
{
	if (sec < VMMCI_HOST_SEC_MIN || sec > VMMCI_HOST_SEC_MAX ||
	    usec >= USEC_PER_SEC)
		return -ERANGE;
	*ns = sec * NSEC_PER_SEC + usec * NSEC_PER_USEC + NSEC_PER_USEC / 2;
	return 0;
}

/*
 * Two readings back to back: -EAGAIN if the guest clock was stepped
 * meanwhile, -ERANGE if the host clock moved unlike the guest's.
 */
static int vmmci_make_sample(const struct vmmci_reading *first,
			     const struct vmmci_reading *second,
			     struct vmmci_sample *s)
{
	if (first->after_ns < first->before_ns ||
	    second->before_ns < first->after_ns ||
	    second->after_ns < second->before_ns)
		return -EAGAIN;
	if (second->host_ns < first->host_ns ||
	    second->host_ns - first->host_ns >
	    second->after_ns - first->before_ns + VMMCI_SAMPLE_SLACK_NS)
		return -ERANGE;

	s->bracket_ns = second->after_ns - second->before_ns;
	s->guest_ns = second->before_ns + s->bracket_ns / 2;
	s->host_ns = second->host_ns;
	return 0;
}

static int vmmci_step_target(s64 now_ns, s64 offset_ns,
			     struct timespec64 *ts)
{
	s64 target_ns;

	if (check_add_overflow(now_ns, offset_ns, &target_ns) ||
	    target_ns < 0)
		return -ERANGE;
	*ts = ns_to_timespec64(target_ns);
	return 0;
}

/*
 * vmd leaves an acknowledged stop in place, and interrupts may come
 * without a change: only a value unlike the last one is new.  vmd clears
 * SYNCRTC on the ack, so that one is forgotten at once.
 */
static enum vmmci_action vmmci_next_action(struct vmmci_cmd_state *st,
					   u32 cmd)
{
	enum vmmci_action action;

	if (cmd == st->last_cmd)
		return VMMCI_ACT_NOTHING;

	st->last_cmd = cmd;
	switch (cmd) {
	case VMMCI_NONE:
		action = VMMCI_ACT_NOTHING;
		break;
	case VMMCI_SHUTDOWN:
	case VMMCI_REBOOT:
		action = st->stopping ? VMMCI_ACT_REPEAT_STOP : VMMCI_ACT_STOP;
		st->stopping = true;
		break;
	case VMMCI_SYNCRTC:
		action = st->stopping ? VMMCI_ACT_SKIP_SYNC : VMMCI_ACT_SYNC;
		st->last_cmd = VMMCI_NONE;
		break;
	default:
		action = VMMCI_ACT_UNKNOWN;
		break;
	}
	return action;
}

static bool vmmci_has_ack(struct vmmci *vi)
{
	return virtio_has_feature(vi->vdev, VMMCI_F_ACK);
}

static void vmmci_ack(struct vmmci *vi, u32 cmd)
{
	if (vmmci_has_ack(vi))
		virtio_cwrite32(vi->vdev, VMMCI_CONFIG_COMMAND, cmd);
}

/* Reading the low dword of TIME_SEC latches the host time */
static int vmmci_read_host_time(struct vmmci *vi, struct vmmci_reading *r,
				struct ptp_system_timestamp *sts)
{
	u32 sec_lo, sec_hi, usec_lo, usec_hi;
	u64 sec, usec;
	int err;

	lockdep_assert_held(&vi->lock);

	if (!vi->ready)
		return -ENODEV;

	r->before_ns = ktime_get_real_ns();
	ptp_read_system_prets(sts);
	sec_lo = virtio_cread32(vi->vdev, VMMCI_CONFIG_TIME_SEC);
	ptp_read_system_postts(sts);
	r->after_ns = ktime_get_real_ns();
	sec_hi = virtio_cread32(vi->vdev, VMMCI_CONFIG_TIME_SEC + 4);
	usec_lo = virtio_cread32(vi->vdev, VMMCI_CONFIG_TIME_USEC);
	usec_hi = virtio_cread32(vi->vdev, VMMCI_CONFIG_TIME_USEC + 4);
	sec = (u64)sec_hi << 32 | sec_lo;
	usec = (u64)usec_hi << 32 | usec_lo;

	err = vmmci_host_time_ns(sec, usec, &r->host_ns);
	if (err)
		dev_warn_ratelimited(&vi->vdev->dev,
				     "ignoring invalid host time %llu s %llu us\n",
				     sec, usec);
	return err;
}

static int vmmci_sample(struct vmmci *vi, struct vmmci_sample *s)
{
	struct vmmci_reading first, second;
	int err;

	err = vmmci_read_host_time(vi, &first, NULL);
	if (!err)
		err = vmmci_read_host_time(vi, &second, NULL);
	if (err)
		return err;

	err = vmmci_make_sample(&first, &second, s);
	if (err == -ERANGE)
		dev_warn_ratelimited(&vi->vdev->dev,
				     "ignoring inconsistent host time: %lld ns apart in %lld ns\n",
				     second.host_ns - first.host_ns,
				     second.after_ns - first.before_ns);
	else if (err)
		dev_info_ratelimited(&vi->vdev->dev,
				     "guest clock stepped while reading the host time, sample dropped\n");
	return err;
}

// @series-if kunit
VISIBLE_IF_KUNIT
int vmmci_set_clock(const struct timespec64 *ts)
{
	KUNIT_STATIC_STUB_REDIRECT(vmmci_set_clock, ts);
	return do_settimeofday64(ts);
}
EXPORT_SYMBOL_IF_KUNIT(vmmci_set_clock);

// @series-endif
static void vmmci_sync_clock(struct vmmci *vi)
{
	struct vmmci_sample s;
	struct timespec64 ts;
	s64 offset, bound;
	int err;

	lockdep_assert_held(&vi->lock);

	if (!virtio_has_feature(vi->vdev, VMMCI_F_TIMESYNC)) {
		dev_warn_ratelimited(&vi->vdev->dev,
				     "host asked for a clock sync without offering its time\n");
		return;
	}
	if (vmmci_sample(vi, &s))
		return;

	/* Within the sample's bound, a step would only add its own error */
	offset = s.host_ns - s.guest_ns;
	bound = s.bracket_ns / 2 + NSEC_PER_USEC / 2;
	if (abs(offset) <= bound) {
		dev_info_ratelimited(&vi->vdev->dev,
				     "clock within %lld ns of host time (bound %lld ns), not stepped\n",
				     offset, bound);
		return;
	}

	err = vmmci_step_target(ktime_get_real_ns(), offset, &ts);
	if (!err)
		err = vmmci_set_clock(&ts);
	if (err) {
		dev_warn_ratelimited(&vi->vdev->dev,
				     "cannot step the clock by %lld ns: %d\n",
				     offset, err);
		return;
	}

	dev_info_ratelimited(&vi->vdev->dev,
			     "clock stepped by %lld ns to host time\n", offset);
}

VISIBLE_IF_KUNIT
void vmmci_stop(struct vmmci *vi, u32 cmd)
{
// @series-if kunit
	KUNIT_STATIC_STUB_REDIRECT(vmmci_stop, vi, cmd);
// @series-endif
	if (cmd == VMMCI_REBOOT) {
		/* "vmctl stop": vmd ends the VM when it resets */
		dev_notice(&vi->vdev->dev, "host requested a reboot\n");
		orderly_reboot();
	} else {
		dev_notice(&vi->vdev->dev, "host requested a shutdown\n");
		orderly_poweroff(true);
	}
}
// @series-if kunit
EXPORT_SYMBOL_IF_KUNIT(vmmci_stop);
// @series-endif

static void vmmci_handle_command(struct vmmci *vi, u32 cmd)
{
	enum vmmci_action action;

	lockdep_assert_held(&vi->lock);

	/* vmd kills a guest that has not acked a stop within 3 s */
	action = vmmci_next_action(&vi->cmd, cmd);
	if (action != VMMCI_ACT_NOTHING && action != VMMCI_ACT_UNKNOWN)
		vmmci_ack(vi, cmd);

	switch (action) {
	case VMMCI_ACT_NOTHING:
		break;
	case VMMCI_ACT_STOP:
		/* Already going down: orderly_*() would force a second one */
		if (system_state > SYSTEM_RUNNING) {
			dev_info(&vi->vdev->dev,
				 "host asked to stop, the system is already going down\n");
			break;
		}
		vmmci_stop(vi, cmd);
		break;
	case VMMCI_ACT_REPEAT_STOP:
		dev_info_ratelimited(&vi->vdev->dev,
				     "host repeated its request, already stopping\n");
		break;
	case VMMCI_ACT_SYNC:
		vmmci_sync_clock(vi);
		break;
	case VMMCI_ACT_SKIP_SYNC:
		dev_info_ratelimited(&vi->vdev->dev,
				     "ignoring a clock sync while stopping\n");
		break;
	case VMMCI_ACT_UNKNOWN:
		dev_warn_ratelimited(&vi->vdev->dev,
				     "ignoring unknown host command %u\n", cmd);
		break;
	}
}

VISIBLE_IF_KUNIT
void vmmci_cmd_work(struct work_struct *work)
{
	struct vmmci *vi = container_of(work, struct vmmci, cmd_work);

	mutex_lock(&vi->lock);
	if (vi->ready)
		vmmci_handle_command(vi, virtio_cread32(vi->vdev,
							VMMCI_CONFIG_COMMAND));
	mutex_unlock(&vi->lock);
}
// @series-if kunit
EXPORT_SYMBOL_IF_KUNIT(vmmci_cmd_work);
// @series-endif

static void vmmci_config_changed(struct virtio_device *vdev)
{
	struct vmmci *vi = vdev->priv;

	/* config space access sleeps */
	schedule_work(&vi->cmd_work);
}

/* Once every device is shut down: vmd ends the VM 3 s after SHUTDOWN */
VISIBLE_IF_KUNIT
int vmmci_power_off_prepare(struct sys_off_data *data)
{
	struct vmmci *vi = data->cb_data;

	if (vmmci_has_ack(vi))
		virtio_cwrite32(vi->vdev, VMMCI_CONFIG_COMMAND, VMMCI_SHUTDOWN);
	return NOTIFY_DONE;
}
// @series-if kunit
EXPORT_SYMBOL_IF_KUNIT(vmmci_power_off_prepare);
// @series-endif

/*
 * Registered so that the kernel powers off, running the above, rather
 * than halting.  vmm(4) also ends a VM whose CPU halts with interrupts
 * off, but as a failure: give vmd the time to end it first.
 */
static int vmmci_power_off(struct sys_off_data *data)
{
	struct vmmci *vi = data->cb_data;

	mdelay(VMMCI_POWER_OFF_WAIT_MS);
	dev_emerg(&vi->vdev->dev, "host did not end the VM, halting\n");
	local_irq_disable();
	for (;;)
		halt();
	return NOTIFY_DONE;
}

VISIBLE_IF_KUNIT
int vmmci_ptp_gettimex(struct ptp_clock_info *info, struct timespec64 *ts,
		       struct ptp_system_timestamp *sts)
{
	struct vmmci *vi = container_of(info, struct vmmci, ptp_info);
	struct vmmci_reading r;
	int err;

	mutex_lock(&vi->lock);
	err = vmmci_read_host_time(vi, &r, sts);
	mutex_unlock(&vi->lock);
	if (err)
		return -EIO;

	*ts = ns_to_timespec64(r.host_ns);
	return 0;
}
// @series-if kunit
EXPORT_SYMBOL_IF_KUNIT(vmmci_ptp_gettimex);
// @series-endif

static int vmmci_ptp_settime(struct ptp_clock_info *info,
			     const struct timespec64 *ts)
{
	return -EOPNOTSUPP;
}

static int vmmci_ptp_adjtime(struct ptp_clock_info *info, s64 delta)
{
	return -EOPNOTSUPP;
}

static int vmmci_ptp_adjfine(struct ptp_clock_info *info, long scaled_ppm)
{
	return -EOPNOTSUPP;
}

static const struct ptp_clock_info vmmci_ptp_info = {
	.owner		= THIS_MODULE,
	.name		= "vmmci host clock",
	.gettimex64	= vmmci_ptp_gettimex,
	.settime64	= vmmci_ptp_settime,
	.adjtime	= vmmci_ptp_adjtime,
	.adjfine	= vmmci_ptp_adjfine,
};

/* The device works without it */
static void vmmci_register_ptp(struct vmmci *vi)
{
	struct ptp_clock *ptp;

	if (!virtio_has_feature(vi->vdev, VMMCI_F_TIMESYNC))
		return;

	vi->ptp_info = vmmci_ptp_info;
	ptp = ptp_clock_register(&vi->ptp_info, &vi->vdev->dev);
	if (IS_ERR(ptp)) {
		dev_warn(&vi->vdev->dev, "no PTP clock: %pe\n", ptp);
		return;
	}
	vi->ptp = ptp;
}

/* One reading: a wrong value here steps nothing */
static ssize_t drift_ns_show(struct device *dev, struct device_attribute *attr,
			     char *buf)
{
	struct vmmci *vi = dev_to_virtio(dev)->priv;
	struct vmmci_reading r;
	s64 guest_ns;
	int err;

	if (!virtio_has_feature(vi->vdev, VMMCI_F_TIMESYNC))
		return -ENODATA;
	mutex_lock(&vi->lock);
	err = vmmci_read_host_time(vi, &r, NULL);
	mutex_unlock(&vi->lock);
	if (err)
		return err == -ENODEV ? err : -ENODATA;
	if (r.after_ns < r.before_ns)
		return -ENODATA;	/* the guest clock was stepped meanwhile */
	guest_ns = r.before_ns + (r.after_ns - r.before_ns) / 2;
	return sysfs_emit(buf, "%lld\n", guest_ns - r.host_ns);
}
static DEVICE_ATTR_ADMIN_RO(drift_ns);

static struct attribute *vmmci_attrs[] = {
	&dev_attr_drift_ns.attr,
	NULL
};
ATTRIBUTE_GROUPS(vmmci);

/* The interrupt comes with the queues, even when there are none */
VISIBLE_IF_KUNIT
int vmmci_start(struct vmmci *vi)
{
	int err;

	err = virtio_find_vqs(vi->vdev, 0, NULL, NULL, NULL);
	if (err)
		return err;

	virtio_device_ready(vi->vdev);
	mutex_lock(&vi->lock);
	vi->ready = true;
	mutex_unlock(&vi->lock);

	/* A command left by the last driver raises no new interrupt */
	schedule_work(&vi->cmd_work);
	return 0;
}
// @series-if kunit
EXPORT_SYMBOL_IF_KUNIT(vmmci_start);
// @series-endif

static void vmmci_quiesce(struct vmmci *vi)
{
	mutex_lock(&vi->lock);
	vi->ready = false;
	mutex_unlock(&vi->lock);
	cancel_work_sync(&vi->cmd_work);
}

static void vmmci_halt(struct vmmci *vi)
{
	vmmci_quiesce(vi);
	virtio_reset_device(vi->vdev);
	vi->vdev->config->del_vqs(vi->vdev);
}

/* No work item may run on the device the core resets */
static void vmmci_shutdown(struct virtio_device *vdev)
{
	vmmci_quiesce(vdev->priv);
	virtio_device_shutdown(vdev);
}

static int vmmci_probe(struct virtio_device *vdev)
{
	struct vmmci *vi;
	int err;

	if (!vdev->config->get) {
		dev_err(&vdev->dev, "config access disabled\n");
		return -EINVAL;
	}

	vi = devm_kzalloc(&vdev->dev, sizeof(*vi), GFP_KERNEL);
	if (!vi)
		return -ENOMEM;

	vi->vdev = vdev;
	vdev->priv = vi;
	mutex_init(&vi->lock);
	INIT_WORK(&vi->cmd_work, vmmci_cmd_work);

	if (vmmci_has_ack(vi)) {
		err = devm_register_sys_off_handler(&vdev->dev,
						    SYS_OFF_MODE_POWER_OFF_PREPARE,
						    SYS_OFF_PRIO_LOW,
						    vmmci_power_off_prepare, vi);
		if (!err)
			err = devm_register_sys_off_handler(&vdev->dev,
							    SYS_OFF_MODE_POWER_OFF,
							    SYS_OFF_PRIO_LOW,
							    vmmci_power_off, vi);
		if (err)
			dev_warn(&vdev->dev, "no power-off notice: %pe\n",
				 ERR_PTR(err));
	}

	err = vmmci_start(vi);
	if (err)
		return err;
	vmmci_register_ptp(vi);

	dev_info(&vdev->dev, "vmd control interface, features:%s%s%s\n",
		 virtio_has_feature(vdev, VMMCI_F_ACK) ? " ack" : "",
		 virtio_has_feature(vdev, VMMCI_F_TIMESYNC) ? " timesync" : "",
		 virtio_has_feature(vdev, VMMCI_F_SYNCRTC) ? " syncrtc" : "");
	return 0;
}

static void vmmci_remove(struct virtio_device *vdev)
{
	struct vmmci *vi = vdev->priv;

	if (vi->ptp)
		ptp_clock_unregister(vi->ptp);
	vmmci_halt(vi);
}

#ifdef CONFIG_PM_SLEEP
static int vmmci_freeze(struct virtio_device *vdev)
{
	vmmci_halt(vdev->priv);
	return 0;
}

static int vmmci_restore(struct virtio_device *vdev)
{
	return vmmci_start(vdev->priv);
}
#endif

static const unsigned int vmmci_features[] = {
	VMMCI_F_TIMESYNC, VMMCI_F_ACK, VMMCI_F_SYNCRTC,
};

static const struct virtio_device_id vmmci_id_table[] = {
	{ VIRTIO_ID_VMMCI, VIRTIO_VENDOR_OPENBSD },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, vmmci_id_table);

static struct virtio_driver vmmci_driver = {
	.driver.name		= KBUILD_MODNAME,
	.driver.dev_groups	= vmmci_groups,
	.id_table		= vmmci_id_table,
	.feature_table		= vmmci_features,
	.feature_table_size	= ARRAY_SIZE(vmmci_features),
	.probe			= vmmci_probe,
	.remove			= vmmci_remove,
	.shutdown		= vmmci_shutdown,
	.config_changed		= vmmci_config_changed,
#ifdef CONFIG_PM_SLEEP
	.freeze			= vmmci_freeze,
	.restore		= vmmci_restore,
#endif
};

module_virtio_driver(vmmci_driver);

MODULE_DESCRIPTION("OpenBSD vmd VMM control interface driver");
MODULE_LICENSE("GPL");
