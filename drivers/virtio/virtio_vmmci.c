// SPDX-License-Identifier: GPL-2.0
/*
 * Driver for the VMM control interface (vmmci) of OpenBSD's vmd(8).
 *
 * vmd gives every guest a legacy virtio device without virtqueues.  The
 * host raises a command in its config space to ask the guest to shut down
 * or reboot ("vmctl stop" asks for a reboot and turns the guest's reset
 * into a power-off), or to tell it that the host clock jumped (SYNCRTC,
 * e.g. after the host resumed from suspend).  The guest acknowledges a
 * command by writing it back; vmd kills a guest that has not acknowledged
 * a stop within three seconds.  The config space also holds the host's
 * wall clock with microsecond resolution, sampled when it is read.
 *
 * This driver acknowledges and carries out the commands, steps the clock
 * to host time on SYNCRTC, tells the host when the guest powers itself
 * off, reports the guest's clock drift in sysfs and offers the host clock
 * as a PTP clock, for chrony and the like.
 */

// @series-if kunit
#include <kunit/static_stub.h>
#include <kunit/visibility.h>
// @series-endif
#include <linux/delay.h>
#include <linux/device.h>
#include <linux/irqflags.h>
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

/*
 * Plausible host times: vmmci appeared in 2017, and vmd delivers the
 * seconds as 32 bits (its high dword always reads 0).
 */
#define VMMCI_HOST_SEC_MIN	1483228800LL	/* 2017-01-01T00:00:00Z */
#define VMMCI_HOST_SEC_MAX	((s64)U32_MAX)

/*
 * Two host samples read back to back may differ by the guest time that
 * passed between them plus this much: two microsecond truncations, and
 * room for host and guest clocks running at slightly different rates.
 */
#define VMMCI_SAMPLE_SLACK_NS	(200 * NSEC_PER_USEC)

/* vmd ends the VM 3 s after the power-off notice */
#define VMMCI_POWER_OFF_WAIT_MS	(10 * MSEC_PER_SEC)

/* What a value read from COMMAND asks the driver to do */
enum vmmci_action {
	VMMCI_ACT_NOTHING,	/* nothing new */
	VMMCI_ACT_STOP,		/* ack, then shut down or reboot */
	VMMCI_ACT_REPEAT_STOP,	/* ack only: already stopping */
	VMMCI_ACT_SYNC,		/* ack, then step the clock */
	VMMCI_ACT_SKIP_SYNC,	/* ack only: no clock step while stopping */
	VMMCI_ACT_UNKNOWN,	/* log, and do not ack */
};

/* A reading of the host clock, between two readings of the guest clock */
struct vmmci_reading {
	s64 host_ns;
	s64 before_ns;
	s64 after_ns;
};

/* A host clock sample and the guest time it was taken at */
struct vmmci_sample {
	s64 host_ns;
	s64 guest_ns;		/* midpoint of the bracket */
	u64 bracket_ns;		/* guest time the latching read took */
};

/* Pure helpers: no device access, no locking, no logging */

/*
 * The host time registers as nanoseconds, in the middle of the
 * microsecond the host truncated its time to.  -ERANGE if they hold no
 * plausible time.
 */
static int vmmci_host_time_ns(u64 sec, u64 usec, s64 *ns)
{
	if (sec < VMMCI_HOST_SEC_MIN || sec > VMMCI_HOST_SEC_MAX ||
	    usec >= USEC_PER_SEC)
		return -ERANGE;
	*ns = sec * NSEC_PER_SEC + usec * NSEC_PER_USEC + NSEC_PER_USEC / 2;
	return 0;
}

/*
 * Make a sample of two readings taken back to back, keeping the second.
 * -EAGAIN if the guest clock went backwards across them (someone stepped
 * it meanwhile); -ERANGE if the host clock went backwards, or forwards by
 * more than the guest clock did, between them.
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

/* The time to step to: now plus the offset, if that is a valid time */
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
 * Decide what the value read from COMMAND asks for, and remember it.
 * vmd leaves an acknowledged SHUTDOWN or REBOOT in place, and a host
 * may raise interrupts without a change, so only a value that differs
 * from the last one acted on is new.  vmd clears SYNCRTC when it is
 * acknowledged: it is forgotten at once, so the next one is new.
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

/* Device access */

static bool vmmci_has_ack(struct vmmci *vi)
{
	return virtio_has_feature(vi->vdev, VMMCI_F_ACK);
}

static void vmmci_ack(struct vmmci *vi, u32 cmd)
{
	if (vmmci_has_ack(vi))
		virtio_cwrite32(vi->vdev, VMMCI_CONFIG_COMMAND, cmd);
}

/*
 * Read the host clock.  The guest's CLOCK_REALTIME is read just before
 * and after the register read that latches the host time, so that the
 * host sample lies between the two; sts, if not NULL, gets the system
 * timestamps of PTP_SYS_OFFSET_EXTENDED around the same read.
 */
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

/* Take two readings back to back and make a sample of them */
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
/* The step itself, on its own so that the tests can replace it */
VISIBLE_IF_KUNIT
int vmmci_set_clock(const struct timespec64 *ts)
{
	KUNIT_STATIC_STUB_REDIRECT(vmmci_set_clock, ts);
	return do_settimeofday64(ts);
}
EXPORT_SYMBOL_IF_KUNIT(vmmci_set_clock);

// @series-endif
/* Step CLOCK_REALTIME to host time, as the host asked with SYNCRTC */
static void vmmci_sync_clock(struct vmmci *vi)
{
	struct vmmci_sample s;
	struct timespec64 ts;
	s64 offset;
	int err;

	lockdep_assert_held(&vi->lock);

	if (!virtio_has_feature(vi->vdev, VMMCI_F_TIMESYNC)) {
		dev_warn_ratelimited(&vi->vdev->dev,
				     "host asked for a clock sync without offering its time\n");
		return;
	}
	if (vmmci_sample(vi, &s))
		return;

	offset = s.host_ns - s.guest_ns;
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
		/* What "vmctl stop" sends: vmd ends the VM when it resets */
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

	/*
	 * Ack first: vmd kills the guest three seconds after a stop request
	 * unless acked, and the ack gives the guest vmd's long timeout
	 * (120 s) to finish.  A repeated request is acked for the same
	 * reason.  SYNCRTC is acked at once too: unacked, vmd would never
	 * send another one.  An unknown command is not acked: vmd would log
	 * an illegal request.
	 */
	action = vmmci_next_action(&vi->cmd, cmd);
	if (action != VMMCI_ACT_NOTHING && action != VMMCI_ACT_UNKNOWN)
		vmmci_ack(vi, cmd);

	switch (action) {
	case VMMCI_ACT_NOTHING:
		break;
	case VMMCI_ACT_STOP:
		/*
		 * The guest is going down on its own: user-mode helpers are
		 * off, and orderly_reboot() would force kernel_restart() from
		 * a worker beside the shutdown under way.
		 */
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

	/* Hard IRQ context: config space access sleeps */
	schedule_work(&vi->cmd_work);
}

/*
 * Power-off.  vmd guests have no ACPI: a power-off only halts the CPUs,
 * which vmd does not see, and the VM stays until its owner kills it.
 * The notice, SHUTDOWN written with no request pending, makes vmd end
 * the VM three seconds later.  It is sent once every device has been
 * shut down (ours reset), where no more disk writes can come; the
 * notice does not need the device set up.
 */
static int vmmci_power_off_prepare(struct sys_off_data *data)
{
	struct vmmci *vi = data->cb_data;

	if (vmmci_has_ack(vi))
		virtio_cwrite32(vi->vdev, VMMCI_CONFIG_COMMAND, VMMCI_SHUTDOWN);
	return NOTIFY_DONE;
}

/*
 * The power-off handler of last resort, which also makes the kernel take
 * the power-off path that runs the one above.  If it returned, the reboot
 * syscall would go on to exit init; so if vmd did not end the VM (it
 * ignores the notice while a host request is pending), halt as Linux
 * does without a power-off handler.
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

/*
 * PTP clock: the host's wall clock, for "refclock PHC" in chrony.  It
 * cannot be set or steered.
 */

static int vmmci_ptp_gettimex(struct ptp_clock_info *info,
			      struct timespec64 *ts,
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

/*
 * The clock is an extra: without it (no PTP support, or registration
 * failed) the device is still controlled and the drift still measured.
 */
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

/*
 * sysfs: the drift, guest minus host time, measured when it is read.  A
 * wrong value steps nothing, so one reading does.  Root only, as
 * /dev/ptpN: each read is four trapped reads on the host.
 */
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

/* probe and remove */

/* The interrupt comes with the queues, even when there are none */
static int vmmci_start(struct vmmci *vi)
{
	int err;

	err = virtio_find_vqs(vi->vdev, 0, NULL, NULL, NULL);
	if (err)
		return err;

	/* Without DRIVER_OK, vmd turns "vmctl stop" into a hard power-off */
	virtio_device_ready(vi->vdev);
	mutex_lock(&vi->lock);
	vi->ready = true;
	mutex_unlock(&vi->lock);

	/* A command raised before we were ready raises no interrupt */
	schedule_work(&vi->cmd_work);
	return 0;
}

/* After this no work item touches the device */
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

/*
 * The core's shutdown resets the device, after which vmd drops the
 * guest's DRIVER_OK; stop the work items first, so that none runs on a
 * reset device.
 */
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

	/* The notice is an extra: without it the guest still halts */
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
